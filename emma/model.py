"""EMMA's two stages: a bi-encoder for recall and a cross-encoder for classification.

Paper section 3.2 (coarse-grained recall): one shared encoder reads the marked sentence and
the relation description. The instance vector is h[CLS] ⊕ h[E_h] ⊕ h[E_t]; the description
vector is h[CLS] ⊕ WeightPooling₁(H) ⊕ WeightPooling₂(H), where each pooling head is a masked
softmax(HW + b) over the description tokens: two "virtual entities" that learn which words of
the description talk about the head and which about the tail. Matching is cosine similarity.

Section 3.3 (fine-grained classification): a separate encoder reads "instance [SEP] description"
for each of the top-k recalled relations; an MLP over the k concatenated [CLS] states gives k
logits, and the arg-max is the prediction.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel

from .choices import CLASSIFIER_FEATURES, CLASSIFIER_HEADS, DECISIONS, DESCRIPTION_POOLINGS, check_choice
from .index import ExampleLevels

# Keys of checkpoints written before they were retired, with the one value that still loads.
_RETIRED_KEYS = {"classifier_hidden": 0, "version": 1, "markers": ["[E_h]", "[/E_h]", "[E_t]", "[/E_t]"]}


@dataclass
class EmmaConfig:
    """Architecture and inference settings saved with every checkpoint; the defaults are the shipped recipe.

    Args:
        encoder: the base encoder it was initialised from (for the record).
        k: candidates the classifier reranks (paper: 2).
        max_length: instance window in word pieces, [CLS]/[SEP] included.
        max_description_length: description window, likewise.
        temperature: InfoNCE temperature τ (paper: 0.02).
        description_pooling: "attention" (two virtual-entity heads, the paper) or "cls" (ablation:
            the description vector is h[CLS] repeated three times, so it stays comparable to the
            3d instance vector).
        use_classifier: False for the "without classifier" ablation (recall only).
        classifier_head: "shared" (one MLP scores each pair state alone → 1 logit each, softmax
            over the k; it cannot depend on slot order, so it needs no slot shuffling to learn to
            read, and it accepts any k) or "concat" (the paper: one MLP over the k concatenated
            pair states → k logits).
        classifier_features: what each pair contributes: "cls_entities" (h[CLS] ⊕ h[E_h] ⊕ h[E_t]
            of the pair, as recall's instance vector) or "cls" (h[CLS], the paper).
        decision: how the final label is picked among the k candidates: "fused" (classifier
            probability × softmax(cos/τ) of recall over the k, so a hesitant classifier does not
            overrule a confident recall) or "classifier" (the paper: the classifier's arg-max).
        extract_threshold: `Extractor.extract` gives a pair no relation when its score under `decision`
            is below this (measured on CrossRE dev by `python -m research extraction`); 0.0, the value
            for checkpoints written before it was measured, gives every pair its best relation.
        seen_margin: δ taken off the recall score of relations the model was trained on when they are
            in force beside new ones (`Extractor.set_relations(..., seen=...)`), so trained relations do
            not take the new ones' sentences (generalized zero-shot; chosen on CrossRE dev by
            `python -m research gzsl`); 0.0 for checkpoints written before it was measured.
        example_levels: {"n": mean} of recall scores of other relations' sentences for relations with n labelled
            examples (`emma.index.ExampleLevels`, measured on the checkpoint's training relations by `python -m
            research example-levels`); recall lowers a relation's mixed score by part of the gap to the level of
            a description alone with them (`emma.index.LEVEL_SHARE`). Empty (checkpoints written before it was
            measured): the mix as it is.

    `EmmaConfig.paper()` is the paper's architecture (concat head over h[CLS], the classifier decides).
    """

    encoder: str = ""
    k: int = 2
    max_length: int = 128
    max_description_length: int = 64
    temperature: float = 0.02
    description_pooling: str = "attention"
    use_classifier: bool = True
    classifier_head: str = "shared"
    classifier_features: str = "cls_entities"
    decision: str = "fused"
    extract_threshold: float = 0.0
    seen_margin: float = 0.0
    example_levels: dict[str, float] = field(default_factory=dict)

    @classmethod
    def paper(cls, **changes) -> "EmmaConfig":
        """The paper's classifier: an MLP over the k concatenated h[CLS] states decides alone."""
        return cls(**{"classifier_head": "concat", "classifier_features": "cls", "decision": "classifier", **changes})

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be at least 1, got {self.k}")
        check_choice("description_pooling", self.description_pooling, DESCRIPTION_POOLINGS)
        check_choice("classifier_head", self.classifier_head, CLASSIFIER_HEADS)
        check_choice("classifier_features", self.classifier_features, CLASSIFIER_FEATURES)
        check_choice("decision", self.decision, DECISIONS)
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if not 0.0 <= self.extract_threshold <= 1.0:
            raise ValueError(f"extract_threshold must be between 0 and 1, got {self.extract_threshold}")
        if not 0.0 <= self.seen_margin < 1.0:
            raise ValueError(f"seen_margin must be in [0, 1), got {self.seen_margin}")
        ExampleLevels.from_config(self.example_levels)  # raises ValueError on a malformed table
        if self.max_length < 8 or self.max_description_length < 3:
            raise ValueError(f"max_length={self.max_length} / max_description_length={self.max_description_length} too small")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "EmmaConfig":
        """From `to_dict` output; keys that earlier checkpoints wrote but nothing reads are dropped when at their old value."""
        data = dict(data)
        for key, old_value in _RETIRED_KEYS.items():
            if key in data and data.pop(key) != old_value:
                raise ValueError(f"{key}={old_value!r} is the only value this version reads")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown EmmaConfig keys: {sorted(unknown)}")
        return cls(**data)


class WeightPooling(nn.Module):
    """Masked attention pooling: weights = softmax(H w + b) over the tokens where `mask` is 1.

    Args:
        hidden: (B, L, d) token states.
        mask: (B, L) 1 for tokens that may take weight ([CLS], [SEP] and padding are 0).

    Returns:
        pooled (B, d) and weights (B, L); each row of weights sums to 1 and is 0 where mask is 0.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = nn.Linear(dim, 1)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert hidden.shape[:2] == mask.shape, f"hidden {tuple(hidden.shape)} and mask {tuple(mask.shape)} disagree"
        assert bool((mask.sum(1) > 0).all()), "every row needs at least one token to pool over"
        logits = self.score(hidden).squeeze(-1).float()  # (B, L)
        logits = logits.masked_fill(mask == 0, float("-inf"))
        weights = torch.softmax(logits, dim=-1)  # (B, L)
        pooled = torch.einsum("bl,bld->bd", weights.to(hidden.dtype), hidden)  # (B, d)
        return pooled, weights


@dataclass
class DescriptionEncoding:
    """Description vectors and the virtual-entity attention weights behind them."""

    vectors: torch.Tensor  # (N, 3d)
    head_weights: torch.Tensor  # (N, L), zero outside the description's tokens
    tail_weights: torch.Tensor  # (N, L)


def _build_encoder(pretrained: str | None, encoder_config: dict | None, vocab_size: int) -> nn.Module:
    """Pretrained weights from `pretrained`, or random weights from `encoder_config` (for loading a checkpoint)."""
    if (pretrained is None) == (encoder_config is None):
        raise ValueError("give exactly one of pretrained (a path or name) and encoder_config")
    if encoder_config is not None:
        cfg = AutoConfig.for_model(**encoder_config)
        model = AutoModel.from_config(cfg, add_pooling_layer=False)
    else:
        # float32 master weights whatever dtype the folder stores (a half-precision copy trains badly).
        model = AutoModel.from_pretrained(pretrained, add_pooling_layer=False, dtype=torch.float32)
    if model.get_input_embeddings().num_embeddings != vocab_size:
        model.resize_token_embeddings(vocab_size)
    return model


class RecallEncoder(nn.Module):
    """The shared bi-encoder of the recall stage."""

    def __init__(self, config: EmmaConfig, encoder: nn.Module) -> None:
        super().__init__()
        self.config = config
        self.encoder = encoder
        dim = encoder.config.hidden_size
        self.head_pool = WeightPooling(dim)
        self.tail_pool = WeightPooling(dim)

    @property
    def dim(self) -> int:
        """Size of instance and description vectors: 3 × hidden."""
        return 3 * self.encoder.config.hidden_size

    def encode_instances(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, head_marker: torch.Tensor, tail_marker: torch.Tensor
    ) -> torch.Tensor:
        """(B, L) ids, (B,) marker positions → (B, 3d) = h[CLS] ⊕ h[E_h] ⊕ h[E_t]."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, d)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return torch.cat([hidden[:, 0], hidden[rows, head_marker], hidden[rows, tail_marker]], dim=-1)  # (B, 3d)

    def encode_descriptions(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, content_mask: torch.Tensor
    ) -> DescriptionEncoding:
        """(B, L) ids → (B, 3d) = h[CLS] ⊕ pool_head(H) ⊕ pool_tail(H), pooling only over `content_mask`."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, d)
        cls = hidden[:, 0]  # (B, d)
        if self.config.description_pooling == "cls":
            zeros = torch.zeros(hidden.shape[:2], device=hidden.device)
            return DescriptionEncoding(torch.cat([cls, cls, cls], dim=-1), zeros, zeros)
        head, head_w = self.head_pool(hidden, content_mask)
        tail, tail_w = self.tail_pool(hidden, content_mask)
        return DescriptionEncoding(torch.cat([cls, head, tail], dim=-1), head_w, tail_w)  # (B, 3d)


class RerankClassifier(nn.Module):
    """The cross-encoder of the classification stage: k (instance, description) pairs → k logits."""

    def __init__(self, config: EmmaConfig, encoder: nn.Module) -> None:
        super().__init__()
        self.config = config
        self.encoder = encoder
        dim = encoder.config.hidden_size
        features = dim * (3 if config.classifier_features == "cls_entities" else 1)
        hidden = dim
        if config.classifier_head == "concat":
            self.mlp = nn.Sequential(nn.Linear(config.k * features, hidden), nn.GELU(), nn.Linear(hidden, config.k))
        else:
            self.mlp = nn.Sequential(nn.Linear(features, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def pair_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor,
        head_marker: torch.Tensor,
        tail_marker: torch.Tensor,
    ) -> torch.Tensor:
        """(P, L) pair inputs (as `collate_pairs` makes them) → (P, F) states the MLP reads, one per pair."""
        # Segment ids only for encoders with two segment embeddings (not RoBERTa's one, nor MPNet's none).
        segments = {"token_type_ids": token_type_ids} if getattr(self.encoder.config, "type_vocab_size", 0) >= 2 else {}
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **segments).last_hidden_state
        feats = hidden[:, 0]  # (P, d)
        if self.config.classifier_features == "cls_entities":
            rows = torch.arange(hidden.shape[0], device=hidden.device)
            feats = torch.cat([feats, hidden[rows, head_marker], hidden[rows, tail_marker]], dim=-1)  # (P, 3d)
        return feats

    def logits(self, feats: torch.Tensor) -> torch.Tensor:
        """(B·k, F) pair states, the k candidates of one instance adjacent → (B, k) logits."""
        k = self.config.k
        assert feats.shape[0] % k == 0, f"{feats.shape[0]} pairs is not a multiple of k={k}"
        if self.config.classifier_head == "concat":
            return self.mlp(feats.reshape(-1, k * feats.shape[-1]))  # (B, k)
        return self.mlp(feats).reshape(-1, k)  # (B, k): each pair scored alone

    def forward(self, **pairs: torch.Tensor) -> torch.Tensor:
        """`collate_pairs` output for B·k pairs, candidates of one instance adjacent → (B, k) logits."""
        return self.logits(self.pair_features(**pairs))


class Emma(nn.Module):
    """Both stages in one module, so a checkpoint is one state dict: keys ``recall.*`` and ``classifier.*``.

    Build a fresh model with `Emma.from_encoder`; load a trained one with `emma.checkpoint.load_checkpoint`.
    """

    def __init__(self, config: EmmaConfig, recall_encoder: nn.Module, classifier_encoder: nn.Module | None) -> None:
        super().__init__()
        self.config = config
        self.recall = RecallEncoder(config, recall_encoder)
        self.classifier = RerankClassifier(config, classifier_encoder) if config.use_classifier else None

    @classmethod
    def from_encoder(
        cls, config: EmmaConfig, vocab_size: int, pretrained: str | None = None, encoder_config: dict | None = None
    ) -> "Emma":
        """Both encoders from `pretrained` weights (a path or name), or random ones from `encoder_config`.

        The two encoders start from the same weights but are trained apart (the paper's design).
        """
        make = lambda: _build_encoder(pretrained, encoder_config, vocab_size)  # noqa: E731
        return cls(config, make(), make() if config.use_classifier else None)

    def with_new_classifier(
        self, config: EmmaConfig, vocab_size: int, pretrained: str | None = None, encoder_config: dict | None = None,
        from_recall: bool = False,
    ) -> "Emma":
        """This model's trained recall stage with a fresh classifier.

        For training in two stages: recall first, then the classifier on recall's hard negatives.
        The classifier's encoder is a copy of the trained recall encoder (`from_recall=True`: it
        already tells head from tail and knows what relations look like), or else built from
        `pretrained` or `encoder_config`. `config` must keep this model's recall settings; its
        classifier fields are the new ones.
        """
        recall_fields = ("max_length", "max_description_length", "temperature", "description_pooling")
        changed = [f for f in recall_fields if getattr(config, f) != getattr(self.config, f)]
        if changed:
            raise ValueError(f"with_new_classifier keeps the recall stage, so its settings must not change: {changed}")
        if not config.use_classifier:
            raise ValueError("with_new_classifier needs a config with use_classifier=True")
        encoder = copy.deepcopy(self.recall.encoder) if from_recall else _build_encoder(pretrained, encoder_config, vocab_size)
        model = Emma(config, self.recall.encoder, encoder)
        model.recall.load_state_dict(self.recall.state_dict())
        return model

    def encoder_config(self) -> dict:
        """The base encoder's architecture, saved so a checkpoint loads without the original weights."""
        return self.recall.encoder.config.to_dict()


def cosine_scores(instances: torch.Tensor, descriptions: torch.Tensor) -> torch.Tensor:
    """(B, D) × (N, D) → (B, N) cosine similarities, computed in float32."""
    return F.normalize(instances.float(), dim=-1) @ F.normalize(descriptions.float(), dim=-1).T
