"""The fixed tag vocabulary of the SAXS tagger.

The order is part of the contract: the tagger's output vector, its checkpoint and
outside data sets index tags by position in ``TAGS``.
"""

TAGS: tuple[str, ...] = (
    "ring",  # sharp isotropic powder ring
    "many_rings",  # three or more rings or higher orders
    "halo",  # broad amorphous (isotropic) ring
    "diffuse_low_q",  # strong central scattering falling off with q
    "spots",  # discrete Bragg spots
    "oriented",  # intensity varies strongly with azimuth
    "high_background",
    "saturation",
    "zingers",  # single hot pixels
    "beam_off_image",
    "blank",  # no sample scattering above background
)

TAG_INDEX: dict[str, int] = {t: i for i, t in enumerate(TAGS)}
