"""Device-code login (``cueapi login``): a CLI polls while its user approves in a browser."""
