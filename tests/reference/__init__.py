"""Independent numpy reference implementations of the Taichi programs in bench/taichi_programs/.
Vectorised numpy, float32 where the Taichi programs compute in f32. Used by
bench/taichi_programs/check_references.py (and later by kiln's port tests)."""
