"""Watch the paper's softmax attention while the engine trains: why does a seed stall?

    PYTHONPATH=src python benchmarks/attention_stall.py CONFIG OUT.jsonl [--every N] [--set k=v ...]

Trains with `attncnn.engine.train.train` (the real engine, same seeding) and, every N steps
(default 20), appends one JSON line to OUT.jsonl with the train loss of that batch and, for
every SpatialSoftmaxAttention module: entropy of its maps as a share of log(H*W) (1 =
uniform), mean over the batch of the largest and smallest weight (w = softmax * H*W;
1 = uniform), the share of logits with |tanh(l / bound)| > 0.9 (clamp saturated), the logit std, and the
gradient norms of the attention conv and of the stage's convs behind it. Prints the run's
results at the end. The hooks only read: the run reproduces `attncnn train` exactly (seed 2
of configs/digits_ablation/attn_stage.yaml: 22.00% test top-1 both ways).
"""
import argparse
import json
import math

import torch

import attncnn.engine.train as engine
from attncnn.engine.config import load_config
from attncnn.models.attention import AttentionModule, SpatialSoftmaxAttention


class Monitor:
    def __init__(self, path: str, every: int):
        self.out, self.every, self.step, self.row = open(path, "w"), every, 0, None

    def attach(self, model: torch.nn.Module) -> torch.nn.Module:
        self.model = model
        self.attn = [(n, m) for n, m in model.named_modules() if isinstance(m, SpatialSoftmaxAttention)]
        for name, m in self.attn:
            m.register_forward_hook(self._attention_hook(name))
        # convs of each stage (stem counts as stage "stem"): the ones the maps gate. Not the
        # attention convs, wherever they sit (placement "stage" names them stages.<i>.<n>.conv)
        attention_params = {id(p) for _, m in model.named_modules()
                            if isinstance(m, AttentionModule) for p in m.parameters()}
        self.convs = {}
        for name, p in model.named_parameters():
            if p.ndim == 4 and id(p) not in attention_params:
                group = name.split(".")[0] if name.startswith("stem") else ".".join(name.split(".")[:2])
                self.convs.setdefault(group, []).append(p)
        return model

    def _attention_hook(self, name):
        def hook(m, inputs, out):
            if self.row is None or not m.training:
                return
            with torch.no_grad():
                x = inputs[0]
                logits = m.conv(x).flatten(2) / m.temperature
                bound = m.logit_bound or math.inf  # None: no clamp, nothing saturates
                sat = (torch.tanh(logits / bound).abs() > 0.9).float().mean()
                w = m.attention(x).flatten(2)  # [B, M, HW], mean 1
                a = w / w.shape[-1]
                ent = -(a * a.clamp_min(1e-12).log()).sum(-1) / math.log(w.shape[-1])
                self.row[name] = {"entropy": round(ent.mean().item(), 4),
                                  "max_w": round(w.amax(-1).mean().item(), 2),
                                  "min_w": round(w.amin(-1).mean().item(), 4),
                                  "tanh_sat": round(sat.item(), 4),
                                  "logit_std": round(logits.std(-1).mean().item(), 3)}
        return hook

    def loss(self, criterion):
        def wrapped(logits, y):
            loss = criterion(logits, y)
            if self.model.training:
                self.step += 1
                if self.row is not None:
                    self.row["loss"] = round(loss.item(), 4)
                    self.row["acc"] = round((logits.argmax(1) == y).float().mean().item(), 3)
            return loss
        return wrapped

    def before_forward(self, module, inputs):
        if module.training:
            self.flush()
            self.row = {"step": self.step} if self.step % self.every == 0 else None

    def flush(self):
        """Called before the next forward: the grads of the last step are still there."""
        if self.row is None:
            return
        def norm(ps):
            gs = [p.grad for p in ps if p.grad is not None]
            return round(torch.stack([g.norm() for g in gs]).norm().item(), 4) if gs else None
        self.row["grad"] = {g: norm(ps) for g, ps in self.convs.items()}
        self.row["grad_attn"] = {n: norm([m.conv.weight]) for n, m in self.attn}
        self.out.write(json.dumps(self.row) + "\n")
        self.out.flush()
        self.row = None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("out")
    ap.add_argument("--every", type=int, default=20)
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(args.config, args.set)
    mon = Monitor(args.out, args.every)
    make_model, make_loss = engine.create_model, engine.build_loss

    def create_model(*a, **k):
        model = mon.attach(make_model(*a, **k))
        model.register_forward_pre_hook(mon.before_forward)
        return model

    engine.create_model = create_model
    engine.build_loss = lambda c: mon.loss(make_loss(c))
    record = engine.train(cfg, quiet=True)
    mon.flush()
    print(json.dumps({"top1": record["final"]["top1"],
                      "history": [(h["epoch"], round(h["train_loss"], 3), h["eval_top1"])
                                  for h in record["history"]]}))


if __name__ == "__main__":
    main()
