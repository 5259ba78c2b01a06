"""The market-data catalog: recorded files parsed once into Parquet (docs/catalog.md).

- :mod:`.store`     the layout: paths, schemas, manifests (readers start here)
- :mod:`.importer`  recorded files -> catalog sources (``ofi data import``)
"""
