"""Image data: listing and decoding files (``images``), seeded resumable batch streams
(``streams``) and the two-domain folder layout (``two_domain``)."""
