"""Graph layer: symbolic args, graph builder, modules."""
