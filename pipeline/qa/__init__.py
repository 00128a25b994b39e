"""Knowing when not to trust a mask: calibrated probabilities, uncertainty maps and the input gate."""
