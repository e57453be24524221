"""Helpers on the attention maps that backbones return."""

from keras import ops


def class_token_attention(attention_maps, grid_size, num_prefix_tokens=1, class_token_index=0):
    """Class-token attention to the image patches, on the patch grid.

    Args:
        attention_maps: one `(B, heads, T, T)` tensor or a list of them (the
            `"attention_maps"` output of a backbone), `T = num_prefix_tokens +
            grid_h * grid_w`.
        grid_size: `(grid_h, grid_w)` of the visual tokens (`backbone.grid_size`).
        num_prefix_tokens: class tokens in front of the visual tokens.
        class_token_index: which prefix token's row to take.

    Returns:
        `(B, heads, grid_h, grid_w)` per map (a list if a list was given).
    """
    if isinstance(attention_maps, (list, tuple)):
        return [
            class_token_attention(m, grid_size, num_prefix_tokens, class_token_index)
            for m in attention_maps
        ]
    grid_h, grid_w = grid_size
    row = attention_maps[:, :, class_token_index, num_prefix_tokens:]
    return ops.reshape(row, (-1, attention_maps.shape[1], grid_h, grid_w))
