"""GPU-side check of the runtime (run on the device machine): CUDA-graph decoding gives the same
greedy tokens as transformers' generate on the GPU, for padded batches of uneven prompts, and a
replica answers prompts through the tokenizer. Prints one line per check; exits 1 on a mismatch."""

import sys
import time
from dataclasses import replace

import torch

from scheduler import engine
from scheduler.replica import InferenceRunner, ReplicaSpec


def main() -> int:
    failures = 0
    arch = replace(engine.MODELS["llama-3.2-1b"], layers=4, name="llama-1b-4-layers")
    for family in ("llama", "qwen2"):
        shape = replace(arch, family=family)
        model = engine.build_model(shape, "fp32", "cuda", seed=1)
        reference = engine.build_model(shape, "fp32", "cuda", seed=2)
        reference.load_state_dict(model.state_dict())
        decoder = engine.StaticDecoder(engine.DecoderWeights.take(model), max_batch=8, max_len=600)
        assert decoder.use_graphs
        generator = torch.Generator().manual_seed(0)
        prompts = [torch.randint(1, shape.vocab, (n,), generator=generator).tolist() for n in (5, 240, 17, 230)]
        got = decoder.generate(prompts, 40)  # slots 240..279 cross the 256-slot span: two graphs
        same = 0
        for prompt, tokens in zip(prompts, got, strict=True):
            with torch.no_grad():
                want = reference.generate(torch.tensor([prompt], device="cuda"), max_new_tokens=40, min_new_tokens=40,
                                          do_sample=False)[0, len(prompt):].tolist()
            same += tokens == want
        ok = same == len(prompts)
        failures += not ok
        print(f"{family}: CUDA-graph greedy tokens equal transformers' for {same}/{len(prompts)} padded prompts"
              f" ({len(decoder._graphs)} graphs)")
    runner = InferenceRunner(ReplicaSpec("llama-3-8b", 8.0, "bf16", max_batch=8, max_new_tokens=32))
    items = [(f"q{i}", f"Summarise GPU prices for week {i}." * (1 + i % 5)) for i in range(24)]
    start = time.perf_counter()
    results = runner.generate(items)
    seconds = time.perf_counter() - start
    print(f"replica {runner.describe()}: {len(results)} answers, {sum(r['tokens'] for r in results)} tokens "
          f"in {seconds:.2f} s; first: {results[0]['completion'][:40]!r}")
    failures += len(results) != len(items) or [r["id"] for r in results] != [i for i, _ in items]
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
