"""Request and response schemas, named by direction; they validate at the edge and generate OpenAPI.

One module per concern: `base` (strict models, limits, parsing), `observables`, `incidents` (what clients send
about incidents, comments and participants), `registry`, `queries` (query strings) and `reads` (responses).
"""
