"""The equivalence kit: what backend authors use to check a backend against native."""
