"""What training and inference both use, so that neither imports the other: checkpoint and
safetensors files, the model spec they carry, the AMP policy, the hardware probes, and atomic
file writing (atomic.py, also JSON)."""
