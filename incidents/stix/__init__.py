"""STIX 2.1: the mapping of an incident, the object store and its projector, exports, TAXII reads, imports, push.

Modules depend one way: `mapping` on nothing here; `store` and `techniques` on `mapping`; `push` and
`taxii_query` on `store`; `projector` on `store`, `push` and `techniques`; `export` on `projector`; `importer`
on `store` and `push`.
"""
