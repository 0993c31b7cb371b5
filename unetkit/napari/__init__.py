"""unetkit in napari (`pip install "unetkit[napari]"`, then Plugins > unetkit): dock widgets that
call the same public API as the command line (Predictor, Predictor.from_pretrained, the zoo), and
sample data under File > Open Sample. Declared to napari by napari.yaml (npe2) through the
`napari.manifest` entry point; nothing outside this package imports napari or Qt."""
