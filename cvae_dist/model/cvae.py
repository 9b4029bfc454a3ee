"""The course's conditional VAE, `VAE_Model`, with the same parameter names and shapes.

The network is split into the steps a rollout composes (`encode_frames`, `encode_labels`,
`posterior`, `decode`); `forward` is the training rollout, so that wrappers such as DDP see
every parameter used in one call.

`save_pretrained(folder)` / `CVAE.from_pretrained(folder)` (huggingface_hub's
PyTorchModelHubMixin) write and read `config.json` (the ModelConfig) and `model.safetensors`;
a local folder needs no network. A run's `best/` and checkpoint folders carry both files too
(checkpoint.write_weights_config), and `checkpoint.load_model` reads either layout.
"""

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from cvae_dist.config import ModelConfig
from cvae_dist.model.layers import (
    COURSE_BUG_SLOPE,
    FIXED_SLOPE,
    Decoder_Fusion,
    Gaussian_Predictor,
    Generator,
    Label_Encoder,
    RGB_Encoder,
)


# No `from __future__ import annotations` here: the hub mixin reads the real ModelConfig class
# off __init__'s signature to rebuild the dataclass from config.json.
class CVAE(nn.Module, PyTorchModelHubMixin, library_name="cvae-dist"):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        slope = COURSE_BUG_SLOPE if config.course_leaky_relu else FIXED_SLOPE
        self.frame_transformation = RGB_Encoder(3, config.F_dim)
        self.label_transformation = Label_Encoder(3, config.L_dim, slope=slope)
        self.Gaussian_Predictor = Gaussian_Predictor(config.F_dim + config.L_dim, config.N_dim, slope=slope)
        self.Decoder_Fusion = Decoder_Fusion(config.F_dim + config.L_dim + config.N_dim, config.D_out_dim)
        self.Generator = Generator(config.D_out_dim, 3)
        self._compiled: dict[str, object] = {}  # see compile_training_calls
        if config.zero_init_posterior:
            head = self.Gaussian_Predictor[-1]
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *, strict: bool = True, **kwargs) -> "CVAE":
        """The mixin's loader, strict by default so that a missing or stray weight is an error."""
        return super().from_pretrained(pretrained_model_name_or_path, strict=strict, **kwargs)

    def train(self, mode: bool = True) -> "CVAE":
        super().train(mode)
        if mode and self.config.freeze_batchnorm:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        return self.frame_transformation(frames)

    def encode_labels(self, labels: torch.Tensor) -> torch.Tensor:
        return self.label_transformation(labels)

    def posterior(self, frame_feature: torch.Tensor, label_feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mu and logvar of q(z_t | x_t, P_t), the log-variance kept in [logvar_min, logvar_max] if clamped."""
        mu, logvar = self.Gaussian_Predictor(frame_feature, label_feature)
        if self.config.logvar_clamp:
            # Outside this range exp(logvar) in the KL and exp(logvar / 2) in the reparameterization
            # overflow or vanish; inside it the values pass through unchanged (as in Stable Diffusion's VAE).
            logvar = logvar.clamp(self.config.logvar_min, self.config.logvar_max)
        return mu, logvar

    def decode(self, prev_feature: torch.Tensor, label_feature: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The next frame from the previous frame's features, the pose's features and z."""
        frame = self.Generator(self.Decoder_Fusion(prev_feature, label_feature, z))
        return torch.sigmoid(frame) if self.config.output_activation == "sigmoid" else frame

    def decode_and_encode(self, prev_feature: torch.Tensor, label_feature: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One autoregressive step: the next frame, and its features as the following step's input."""
        frame = self.decode(prev_feature, label_feature, z)
        return frame, self.encode_frames(frame)

    def compile_training_calls(self, **options) -> None:
        """torch.compile each of the TRAINING_CALLS on its own (fullgraph, static shapes, `options`),
        for the training rollout alone: each is one graph reused wherever the rollout makes that
        call, so that the autoregressive step compiles once rather than unrolled over the window.
        Inference (validation, evaluation, generation) calls the methods and stays eager."""
        self._compiled = {name: torch.compile(getattr(self, name), fullgraph=True, dynamic=False, **options) for name in TRAINING_CALLS}

    def training_call(self, name: str):
        """The method `name` of TRAINING_CALLS as the training rollout calls it: compiled if compile_training_calls was."""
        return self._compiled.get(name) or getattr(self, name)

    def forward(self, frames: torch.Tensor, labels: torch.Tensor, noise: torch.Tensor, teacher_forcing, recompute: bool = False):
        from cvae_dist.rollout import training_rollout

        return training_rollout(self, frames, labels, noise, teacher_forcing=teacher_forcing, recompute=recompute)


# The methods a training rollout calls (rollout.training_rollout): the regions --compile compiles.
TRAINING_CALLS = ("encode_frames", "encode_labels", "posterior", "decode", "decode_and_encode")
