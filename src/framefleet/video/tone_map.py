"""HDR pictures (PQ or HLG, BT.2020) rendered as an SDR screen shows them, and SDR pictures placed back in HDR.

`ToSdr` is the rendering framefleet gives models trained on SDR pictures:

1. the decoder's R'G'B' code values become display light: PQ (SMPTE ST 2084) as coded; HLG (ARIB STD-B67)
   through BT.2100's reference OOTF for a 1,000 cd/m2 display (system gamma 1.2);
2. the light is tone-mapped from the source's peak (HDR10 mastering or content light metadata, else
   1,000 cd/m2) to an SDR screen's 100 cd/m2 with the BT.2390 EETF, in the PQ domain: light below the
   knee (about 30 cd/m2 for a 1,000 cd/m2 source) is kept exactly, brighter light rolls off smoothly. The
   curve maps the largest of R, G and B, and all three are scaled by the same factor, which keeps hue and
   saturation (the curve applied to each channel on its own turns bright colours, a pink sky, white);
3. BT.2020 primaries become BT.709 in linear light; colours outside BT.709 are clipped;
4. the light is coded for BT.709 (inverse BT.1886, gamma 2.4), 8 bits.

Step 1 is a table of 65,536 entries indexed by the 16-bit code (HLG's OOTF, which mixes the channels,
follows it per pixel); step 2's factor is a table indexed by the square root of the largest channel's
light. Tables are built once per source (`ToSdr.for_source`, cached).

`FromSdr` is `--hdr keep`'s way back: SDR white is placed at HDR reference white, 203 cd/m2 (BT.2408), the
primaries become BT.2020, and the light is coded PQ or HLG in 16 bits (for a 10-bit encoder). It is not
the inverse of `ToSdr`: the stylized picture is SDR paint, placed in an HDR programme as BT.2408 places SDR
graphics, not stretched back into highlights it never had.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

PQ_PEAK = 10000.0
"""cd/m2 at PQ code 1.0."""
SDR_PEAK = 100.0
"""cd/m2 of SDR white on the reference SDR screen."""
HDR_REFERENCE_WHITE = 203.0
"""cd/m2 of HDR reference (graphics) white, BT.2408: where `FromSdr` places SDR white."""
HLG_DISPLAY_PEAK = 1000.0
"""The nominal peak of the HLG reference display, cd/m2."""
HLG_GAMMA = 1.2
"""BT.2100's HLG system gamma at a 1,000 cd/m2 display."""
DEFAULT_SOURCE_PEAK = 1000.0
"""cd/m2 assumed for a PQ source with no mastering or content light metadata."""
BT1886_GAMMA = 2.4

_PQ_M1, _PQ_M2 = 2610 / 16384, 2523 / 4096 * 128
_PQ_C1, _PQ_C2, _PQ_C3 = 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
_HLG_A = 0.17883277
_HLG_B = 1 - 4 * _HLG_A
_HLG_C = 0.5 - _HLG_A * np.log(4 * _HLG_A)
_TABLE = 65536
_BT2020_LUMA = np.array([0.2627, 0.6780, 0.0593])

_PRIMARIES = {  # red, green, blue, white (CIE 1931 xy)
    "bt709": ((0.640, 0.330), (0.300, 0.600), (0.150, 0.060), (0.3127, 0.3290)),
    "bt2020": ((0.708, 0.292), (0.170, 0.797), (0.131, 0.046), (0.3127, 0.3290)),
}


def pq_to_nits(code: np.ndarray) -> np.ndarray:
    """SMPTE ST 2084 EOTF: PQ code values in [0, 1] to cd/m2."""
    p = np.power(np.clip(code, 0.0, 1.0), 1 / _PQ_M2)
    return PQ_PEAK * np.power(np.maximum(p - _PQ_C1, 0.0) / (_PQ_C2 - _PQ_C3 * p), 1 / _PQ_M1)


def nits_to_pq(nits: np.ndarray) -> np.ndarray:
    """The inverse of `pq_to_nits`."""
    y = np.power(np.clip(np.asarray(nits, dtype=np.float64) / PQ_PEAK, 0.0, 1.0), _PQ_M1)
    return np.power((_PQ_C1 + _PQ_C2 * y) / (1 + _PQ_C3 * y), _PQ_M2)


def hlg_to_scene(code: np.ndarray) -> np.ndarray:
    """ARIB STD-B67 inverse OETF: HLG code values in [0, 1] to scene light in [0, 1]."""
    code = np.clip(code, 0.0, 1.0)
    with np.errstate(over="ignore"):
        upper = (np.exp((code - _HLG_C) / _HLG_A) + _HLG_B) / 12
    return np.where(code <= 0.5, code * code / 3, upper)


def scene_to_hlg(scene: np.ndarray) -> np.ndarray:
    """ARIB STD-B67 OETF: scene light in [0, 1] to HLG code values."""
    scene = np.clip(scene, 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        upper = _HLG_A * np.log(np.maximum(12 * scene - _HLG_B, 1e-12)) + _HLG_C
    return np.where(scene <= 1 / 12, np.sqrt(3 * scene), upper)


def bt2390_eetf(nits: np.ndarray, source_peak: float, target_peak: float = SDR_PEAK) -> np.ndarray:
    """BT.2390's EETF (no black lift): display light of a source mastered to `source_peak` cd/m2 mapped onto
    a display of `target_peak`; identity below the knee, a Hermite roll-off above it, in the PQ domain."""
    if source_peak <= target_peak:
        return np.minimum(nits, target_peak)
    source_pq = float(nits_to_pq(np.float64(source_peak)))
    e1 = np.minimum(nits_to_pq(nits) / source_pq, 1.0)
    max_lum = float(nits_to_pq(np.float64(target_peak))) / source_pq
    knee = 1.5 * max_lum - 0.5
    t = (e1 - knee) / (1 - knee)
    rolled = ((2 * t**3 - 3 * t**2 + 1) * knee + (t**3 - 2 * t**2 + t) * (1 - knee)
              + (-2 * t**3 + 3 * t**2) * max_lum)
    e2 = np.where(e1 < knee, e1, rolled)
    return pq_to_nits(e2 * source_pq)


def primaries_matrix(source: str, target: str) -> np.ndarray:
    """The 3 x 3 matrix taking linear RGB in `source` primaries to `target` ("bt709", "bt2020"), same white."""
    return np.linalg.inv(_rgb_to_xyz(target)) @ _rgb_to_xyz(source)


def _rgb_to_xyz(name: str) -> np.ndarray:
    *colours, white = _PRIMARIES[name]
    xyz = np.array([[x / y, 1.0, (1 - x - y) / y] for x, y in colours]).T
    wx, wy = white
    scale = np.linalg.solve(xyz, np.array([wx / wy, 1.0, (1 - wx - wy) / wy]))
    return xyz * scale


def _sqrt_index(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] as indices into a table sampled at squares (fine steps where light is dim)."""
    return (np.sqrt(np.clip(values, 0.0, 1.0)) * (_TABLE - 1) + 0.5).astype(np.uint16)


def _squares() -> np.ndarray:
    return np.square(np.arange(_TABLE, dtype=np.float64) / (_TABLE - 1))


@cache
def _sdr_coding() -> np.ndarray:
    """SDR linear light (sampled at squares) to 8-bit BT.709 code (inverse BT.1886)."""
    return (np.power(_squares(), 1 / BT1886_GAMMA) * 255 + 0.5).astype(np.uint8)


@dataclass(frozen=True)
class ToSdr:
    """HDR R'G'B' code values (16-bit) to 8-bit SDR BT.709 RGB, as a 100 cd/m2 SDR screen shows them."""

    transfer: str
    """pq or hlg."""
    source_peak: float
    """The brightest light of the source, cd/m2 (mastering or content light metadata)."""

    @staticmethod
    @cache
    def for_source(transfer: str, source_peak: float) -> ToSdr:
        """The (cached) rendering of one kind of source."""
        return ToSdr(transfer, source_peak)

    def __post_init__(self) -> None:
        if self.transfer not in ("pq", "hlg"):
            raise ValueError(f"no SDR rendering of transfer {self.transfer!r}")
        codes = np.arange(_TABLE, dtype=np.float64) / (_TABLE - 1)
        # code -> display light relative to `scale` cd/m2 (HLG: scene light; its OOTF follows per pixel)
        scale = PQ_PEAK if self.transfer == "pq" else HLG_DISPLAY_PEAK
        light = pq_to_nits(codes) / PQ_PEAK if self.transfer == "pq" else hlg_to_scene(codes)
        # the largest channel's light (sampled at squares) -> the factor making all three SDR light
        peaks = np.maximum(_squares(), 1e-12)
        gain = bt2390_eetf(peaks * scale, self.source_peak) / SDR_PEAK / peaks
        object.__setattr__(self, "_light", light.astype(np.float32))
        object.__setattr__(self, "_gain", gain.astype(np.float32))
        object.__setattr__(self, "_gamut", primaries_matrix("bt2020", "bt709").T.astype(np.float32))

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """H x W x 3 uint16 R'G'B' (full range, BT.2020) to H x W x 3 uint8 SDR BT.709 R'G'B'."""
        light = self._light[rgb]
        if self.transfer == "hlg":
            luma = light @ _BT2020_LUMA.astype(np.float32)
            light *= np.power(luma, HLG_GAMMA - 1)[..., None]  # display light, relative to the display's peak
        brightest = np.maximum(np.maximum(light[..., 0], light[..., 1]), light[..., 2])  # (max(axis) is 8x slower)
        light *= self._gain[_sqrt_index(brightest)][..., None]
        return _sdr_coding()[_sqrt_index(light @ self._gamut)]


@dataclass(frozen=True)
class FromSdr:
    """8-bit SDR BT.709 RGB to 16-bit HDR R'G'B' code values (BT.2020, PQ or HLG), SDR white at 203 cd/m2."""

    transfer: str

    @staticmethod
    @cache
    def for_target(transfer: str) -> FromSdr:
        """The (cached) mapping into one transfer."""
        return FromSdr(transfer)

    def __post_init__(self) -> None:
        if self.transfer not in ("pq", "hlg"):
            raise ValueError(f"no HDR coding for transfer {self.transfer!r}")
        sdr = np.power(np.arange(256) / 255, BT1886_GAMMA)
        object.__setattr__(self, "_linear", (sdr * HDR_REFERENCE_WHITE / PQ_PEAK).astype(np.float32))
        object.__setattr__(self, "_gamut", primaries_matrix("bt709", "bt2020").T.astype(np.float32))
        # light relative to 10,000 cd/m2 (sampled at squares) -> PQ code; HLG codes scene light the same way
        coding = nits_to_pq(_squares() * PQ_PEAK) if self.transfer == "pq" else scene_to_hlg(_squares())
        object.__setattr__(self, "_coding", (coding * 65535 + 0.5).astype(np.uint16))

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """H x W x 3 uint8 SDR BT.709 R'G'B' to H x W x 3 uint16 HDR R'G'B' (full range, BT.2020)."""
        light = self._linear[rgb] @ self._gamut  # display light / 10,000 cd/m2
        if self.transfer == "hlg":  # BT.2100's inverse OOTF for the 1,000 cd/m2 reference display
            display = light * (PQ_PEAK / HLG_DISPLAY_PEAK)
            luma = np.maximum(display @ _BT2020_LUMA.astype(np.float32), 1e-12)
            light = display * np.power(luma, (1 - HLG_GAMMA) / HLG_GAMMA)[..., None]
        return self._coding[_sqrt_index(light)]
