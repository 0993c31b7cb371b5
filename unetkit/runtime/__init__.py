"""The machine a run or a prediction runs on, and the files it writes: the AMP policy (amp.py),
hardware probes (hardware.py), threads for file work (threads.py), atomic file writing (atomic.py,
also JSON), which files are unetkit's to replace (ownership.py: run folders, predict's manifest,
named outputs), the folder locks (folder_lock.py), and the option fields every options dataclass
is made of (options.py). Training and inference both use it; it imports neither."""
