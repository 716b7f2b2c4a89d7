"""Action-constrained decoding: a token trie of the allowed answers and the logits mask it implies.

The same mask is used when sampling (``VLMPolicy.generate``) and when scoring (``VLMPolicy.evaluate``), so
PPO ratios compare the same masked distribution that produced the samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vln_gym.actions import ACTION_WORDS


class TokenTrie:
    """Prefix tree of token sequences; every sequence ends with ``end_token_id``."""

    def __init__(self, sequences: Sequence[Sequence[int]]):
        if not sequences:
            raise ValueError("TokenTrie needs at least one allowed sequence")
        self.root: dict[int, dict] = {}
        for sequence in sequences:
            node = self.root
            for token in sequence:
                node = node.setdefault(int(token), {})
        self.max_length = max(len(s) for s in sequences)

    def allowed(self, prefix: Sequence[int]) -> list[int]:
        """Tokens allowed after ``prefix``; raises ``ValueError`` when ``prefix`` leaves the trie."""
        node = self.root
        for position, token in enumerate(prefix):
            token = int(token)
            if token not in node:
                raise ValueError(
                    f"token {token} at response position {position} is outside the action grammar "
                    f"(allowed there: {sorted(node)})"
                )
            node = node[token]
        return list(node)

    def complete(self, prefix: Sequence[int]) -> bool:
        """True when ``prefix`` starts with a whole allowed sequence (the answer is finished)."""
        node = self.root
        for token in prefix:
            if not node:
                return True
            node = node.get(int(token))
            if node is None:
                return False
        return not node


def build_action_trie(tokenizer, end_token_id: int, answers: Sequence[str] = ACTION_WORDS) -> TokenTrie:
    """Trie of each answer's tokens (as encoded after the assistant header) followed by ``end_token_id``."""
    sequences = [[*tokenizer.encode(answer, add_special_tokens=False), end_token_id] for answer in answers]
    return TokenTrie(sequences)


def allowed_mask(
    trie: TokenTrie, prefixes: Sequence[Sequence[int]], vocab_size: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Bool ``[len(prefixes), vocab_size]`` on ``device``: True where the token may follow each prefix."""
    rows, tokens = [], []
    for row, prefix in enumerate(prefixes):
        allowed = trie.allowed(prefix)
        rows.extend([row] * len(allowed))
        tokens.extend(allowed)
    mask = torch.zeros(len(prefixes), vocab_size, dtype=torch.bool, device=device)
    mask[
        torch.tensor(rows, dtype=torch.long, device=device),
        torch.tensor(tokens, dtype=torch.long, device=device),
    ] = True
    return mask


def response_mask(
    trie: TokenTrie,
    responses: Sequence[torch.Tensor],
    length: int,
    vocab_size: int,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Bool ``[B, length, vocab_size]`` on ``device``: the grammar mask before each response token (all True
    on padding). Raises ``ValueError`` when a response leaves the grammar."""
    prefixes, slots, padding = [], [], []
    for row, response in enumerate(responses):
        tokens = response.tolist()
        trie.allowed(tokens)  # the whole response must stay inside the grammar
        prefixes.extend(tokens[:t] for t in range(len(tokens)))
        slots.extend(row * length + t for t in range(len(tokens)))
        padding.extend(row * length + t for t in range(len(tokens), length))
    mask = torch.zeros(len(responses) * length, vocab_size, dtype=torch.bool, device=device)
    if prefixes:
        mask[torch.tensor(slots, dtype=torch.long, device=device)] = allowed_mask(
            trie, prefixes, vocab_size, device
        )
    if padding:
        mask[torch.tensor(padding, dtype=torch.long, device=device)] = True
    return mask.view(len(responses), length, vocab_size)


class ActionTrieLogitsProcessor:
    """HF ``LogitsProcessor``-compatible: sets disallowed tokens to the dtype's minimum.

    ``input_ids[:, prompt_length:]`` is the response so far. Usable with ``model.generate`` or any loop.
    Rows whose answer is already complete are left unmasked (``generate`` pads them anyway).
    """

    def __init__(self, trie: TokenTrie, prompt_length: int = 0):
        self.trie = trie
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        prefixes = [row[self.prompt_length :].tolist() for row in input_ids]
        done = [self.trie.complete(prefix) for prefix in prefixes]
        mask = allowed_mask(
            self.trie, [[] if d else p for p, d in zip(prefixes, done, strict=True)], scores.shape[-1]
        )
        mask[torch.tensor(done, dtype=torch.bool)] = True
        return apply_mask(scores, mask.to(scores.device))


def apply_mask(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Disallowed logits -> the dtype's minimum (finite: no NaN entropies; softmax gives 0)."""
    return logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
