"""prvr-bench core: config, registry, data, evaluator, training loop, tracking, CLIs."""
