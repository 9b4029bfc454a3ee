"""Training with Hugging Face Accelerate: the only package that knows about processes and devices.

    parts = build(config)        precision.py, build.py: the Accelerator, data, model, optimizer
    Loop(parts).fit()            loop.py: epochs, steps, logs; validation.py: the validation rollout;
                                 run_folder.py: where a run starts, checkpoints, the best weights

Data, model, rollout and loss are plain PyTorch; Accelerate supplies devices, precision,
gradient accumulation, distributed gradients, checkpoint state and the TensorBoard tracker.
"""

from cvae_dist.training.build import Parts, build
from cvae_dist.training.loop import Loop
from cvae_dist.training.preemption import Preempted

__all__ = ["Loop", "Parts", "Preempted", "build"]
