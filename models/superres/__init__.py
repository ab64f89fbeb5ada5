"""CNN super-resolution of binned SANS detector images."""
