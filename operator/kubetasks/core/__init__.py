"""The pure core: decisions without I/O. Every function here takes the world as arguments
(including ``now``) and returns what should be true, so it is tested with plain values."""
