"""The shared engine of the black-box methods: masks, batching, streaming."""
