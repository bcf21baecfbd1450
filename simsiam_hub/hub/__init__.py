"""The model hub: the model folder and its ``config.json`` (``folder``), weights in and out of
safetensors and foreign layouts (``weights``), the model card (``card``), results files
(``results``), export, the Hub repo (``repo``: push and pull), loading (``loading``:
``from_pretrained``), and the registry of published variants (``registry``).
"""
