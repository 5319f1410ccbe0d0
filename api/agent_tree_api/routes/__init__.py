"""The API's routes, one module per resource; all under ``/api/v1/namespaces/{namespace}``."""
