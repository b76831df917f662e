"""The learned bias of an attention written out in a traced or exported torch forward: ``table[:, index]`` of a
learned (heads, T) table and a fixed (L, S) integer index, added to the scores (LeViT's, EfficientFormer's
``attention_biases[:, attention_bias_idxs]``), read as :class:`~xconv.DotProductAttention`'s ``bias_grid``
where the index is exactly the relative-offset index of a map, and refused by name otherwise."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backends._torch_env import nn, torch
from ..errors import UnsupportedLayerError
from ..kinds.token._dot import bias_index
from ._graph import Names
from .torch_checks import storage_of

__all__ = ["AttentionBiases"]


class AttentionBiases:
    """The bias tables of one traced graph's attentions (a part of :class:`~.torch_heads.Heads`): which nodes
    are ``table[:, index]``, and, for an attention that adds one, its DotProductAttention fields and weights."""

    module: nn.Module
    names: Names
    params: dict[Any, Any]  # get_attr nodes (and views of them): their tensors
    source: dict[Any, str]  # a tensor's storage -> its state_dict key
    biases: dict[Any, tuple[Any, Any]]  # table[:, index]: (the table's node, the index's node)
    state: dict[str, Any]  # the tables by canonical key
    fixed: dict[str, Any]  # ... and their indices, where the module keeps them in its state_dict
    _state_keys: set[str] | None

    def _bias_table(self, node: Any, method: str, args: list[Any]) -> bool:
        """``table[:, index]`` of a learned (heads, T) table and a fixed (L, S) integer index: an attention's
        bias, read where it is added to the scores (or given to sdpa as its ``attn_mask``)."""
        if method != "getitem" or len(args) != 2 or args[0] not in self.params:
            return False
        at = args[1]
        if not (isinstance(at, tuple) and len(at) == 2 and at[0] == slice(None) and at[1] in self.params):
            return False
        table, index = self.params[args[0]], self.params[at[1]]
        if not (isinstance(table, torch.Tensor) and table.dim() == 2 and table.is_floating_point()):
            return False
        if not (isinstance(index, torch.Tensor) and index.dim() == 2 and index.dtype in (torch.int64, torch.int32)):
            return False
        self.biases[node] = (args[0], at[1])
        return True

    def _bias(self, bias: Any, heads: int, length: int, keys: int, where: str) -> tuple[str, dict[str, Any]]:
        """The name of an attention adding ``bias`` (a :meth:`_bias_table` node) and its DotProductAttention
        fields; records the table (and the index, where the module keeps it in its state_dict)."""
        table_node, index_node = self.biases[bias]
        table, index = self.params[table_node], self.params[index_node]
        table_key = self.source.get(storage_of(table), str(table_node.target))
        index_key = self.source.get(storage_of(index), str(index_node.target))
        if table_key not in dict(self.module.named_parameters()):
            raise UnsupportedLayerError(f"from_torch: {where}: the attention bias table {table_key!r} is not learned")
        if tuple(index.shape) != (length, keys) or table.shape[0] != heads:
            raise UnsupportedLayerError(
                f"from_torch: {where}: the attention bias {table_key!r}[:, {index_key!r}] is not of (heads, queries, "
                f"keys) = ({heads}, {length}, {keys})"
            )
        if table.shape[1] != keys:
            raise UnsupportedLayerError(
                f"from_torch: {where}: the attention bias table {table_key!r} has {table.shape[1]} entries per head; "
                f"a bias per relative offset on the map of {keys} keys has one per key"
            )
        fields = _bias_grid(index.cpu().numpy(), int(table.shape[1]))
        if fields is None:
            raise UnsupportedLayerError(
                f"from_torch: {where}: the attention bias index {index_key!r} is not the relative-offset index of "
                "a map (|dy| * W + |dx| between queries taken every stride-th row and column and all the keys); "
                "no other bias index is supported"
            )
        owner, _, leaf = table_key.rpartition(".")
        name = self.names.take(owner, own=True) if owner and leaf == "attention_biases" else self.names.take(leaf)
        if self._state_keys is None:
            self._state_keys = set(self.module.state_dict().keys())
        fields["state_index"] = index_key in self._state_keys
        self.state[f"{name}.attention_biases"] = table
        if fields["state_index"]:
            self.fixed[f"{name}.attention_bias_idxs"] = index
        return name, fields


def _bias_grid(index: np.ndarray, table: int) -> dict[str, Any] | None:
    """The ``bias_grid`` and ``bias_stride`` whose relative-offset index is ``index`` (L, S), for a table of
    ``table`` entries; None where there is none."""
    length, keys = index.shape
    for h in range(1, keys + 1):
        if keys % h:
            continue
        w = keys // h
        for stride in range(1, max(h, w) + 1):
            fits = h * w == table and -(-h // stride) * -(-w // stride) == length
            if fits and np.array_equal(bias_index((h, w), stride), index):
                return {"bias_grid": (h, w), "bias_stride": stride}
    return None
