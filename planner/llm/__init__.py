"""Real-time LLM workloads: decoder models, TTFT and per-token latency under an SLO.

* `planner.llm.workload`  -- the workload spec (prompt/generation lengths, concurrency, SLOs, quality bound)
* `planner.llm.runtimes`  -- decoder runtimes (prefill + KV-cache decode) per backend
* `planner.llm.hf`        -- transformers causal LMs behind the decoder API (`HFDecoder`)
* `planner.llm.measure`   -- TTFT / TPOT / tokens-per-second measurement; `llm_constraints`
* `planner.llm.quality`   -- teacher-forced next-token agreement and KL against fp32 eager
* `planner.llm.trial`     -- worker jobs: `prepare_llm`, `run_llm_trial`

Importing this package is light: torch, onnxruntime and numpy load only inside the
functions that need them (runtimes, quality, trial).
"""
