"""HTTP routes of the personalization API, one module per resource."""
