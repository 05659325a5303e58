"""``unpaired serve``: the local web page (``app``) and its HTML, CSS and script (package data)."""
