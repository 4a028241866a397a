"""Layer-selective RL post-training (GRPO, Dr. GRPO, DAPO; GiGPO advantages).

    from jaxlayer.rl.config import default_config
    from jaxlayer.rl.train import train
    config = default_config()
    config.model.path, config.run_dir, config.train.layers = MODEL_DIR, RUN_DIR, "layers.14"
    result = train(config)  # TrainResult: run_dir, step, metrics, reward_history,
                            # step_seconds, trained_params, optimizer_state_bytes, model

Modules: selection (what trains), optimizer (AdamW over the trainable leaves), advantages,
losses, algorithms (presets), step (the compiled update), train (the loop), memory (what a
device needs), checkpoint (run directories, export), metrics (JSONL / TensorBoard), config
(every key and default), multiturn (episodes in an environment), gigpo (multi-turn
advantages).
"""
