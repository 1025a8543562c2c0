"""Data: the SynthVox world, the VoxCeleb pipeline, and seeded trial lists."""
