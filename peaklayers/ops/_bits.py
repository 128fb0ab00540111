"""Boolean maps eight to a byte, for boolean work that is bound by memory traffic.

Bitwise ``|``, ``&`` and ``~`` on the packed bytes act on each of the eight maps at once,
and shifted views (along H and W) shift all eight alike, so code written for boolean
maps runs unchanged on packed ones and moves an eighth of the bytes.
"""

import torch


def pack_maps(mask: torch.Tensor) -> torch.Tensor:
    """Maps ``8 g .. 8 g + 7`` of ``mask`` as the bits of byte ``g``.

    Args:
        mask (Tensor[S, C, H, W], bool).

    Returns:
        Tensor[ceil(S * C / 8), H, W], uint8: bit ``i`` of byte ``g`` is map ``8 g + i``
        of ``mask.reshape(S * C, H, W)`` (False past the last map).
    """
    count, height, width = mask.shape[0] * mask.shape[1], mask.shape[2], mask.shape[3]
    maps = mask.reshape(count, height, width)
    missing = (8 - count % 8) % 8
    if missing:
        maps = torch.cat([maps, maps.new_zeros((missing, height, width))])
    octets = maps.reshape((count + missing) // 8, 8, height, width).to(torch.uint8)
    shifts = torch.arange(8, dtype=torch.uint8, device=mask.device)[None, :, None, None]
    # The eight bits of a byte are distinct, so their sum is their union: one shift and
    # one reduction instead of fifteen passes.
    return (octets << shifts).sum(dim=1, dtype=torch.uint8)


def unpack_maps(packed: torch.Tensor, samples: int, channels: int) -> torch.Tensor:
    """Inverse of :func:`pack_maps`.

    Args:
        packed (Tensor[G, H, W], uint8): ``G >= ceil(samples * channels / 8)``.
        samples, channels (int): the shape the maps had.

    Returns:
        Tensor[samples, channels, H, W], bool.
    """
    groups, height, width = packed.shape[0], packed.shape[1], packed.shape[2]
    shifts = torch.arange(8, dtype=torch.uint8, device=packed.device)[None, :, None, None]
    bits = ((packed[:, None] >> shifts) & 1).to(torch.bool)
    maps = bits.reshape(groups * 8, height, width)[: samples * channels]
    return maps.reshape(samples, channels, height, width)
