"""fedserving: online inference of published models at one party (docs/serving.md)."""
