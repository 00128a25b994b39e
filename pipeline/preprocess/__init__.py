"""Preprocessing: orientation to RAS, cropping, resampling, intensity normalisation, and the record that inverts them."""
