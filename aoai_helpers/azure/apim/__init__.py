"""APIM: policy rendering, provisioning plan and apply."""

__all__: list[str] = []
