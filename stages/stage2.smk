# Stage 2 (the second half of a two-stage competition): see docs/stage2.md.
