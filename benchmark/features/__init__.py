"""Bring your own videos: build an MS-SL-layout collection, with CLIP teacher features, from
raw videos and captions (``python -m benchmark.features from-videos|texts``).

Needs the ``features`` extra (``pip install -e .[features]``: transformers, tokenizers, PyAV,
Pillow). The rest of the core never imports this package or those libraries
(tests/test_layering.py). Modules:

* ``decode``   frame sampling at a fixed rate with PyAV; video lists
* ``models``   CLIP image/text, RoBERTa token encoders; optional timm/torchvision backbones
* ``inputs``   caption splits, moment spans, id checks
* ``pipeline`` decoding in a background thread while the models encode
* ``shards``   resumable work directories of atomic shards; atomic file writes
* ``writers``  keyed HDF5 and BigFile outputs
* ``extract``  the two jobs, ``from_videos`` and ``texts``
* ``cli``      argument parsing
* ``throughput`` frames/s on synthetic videos (``python -m benchmark.features.throughput``)
"""
