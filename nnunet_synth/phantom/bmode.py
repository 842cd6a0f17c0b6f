"""One B-mode ultrasound image: anatomy -> scatterers -> RF lines -> envelope -> grey values.

The pipeline follows how a scanner forms an image:

1. Scatterers on the beam grid (samples along each scan line): Gaussian
   amplitudes whose power is the tissue's echogenicity (fully developed speckle),
   a few strong point scatterers, and coherent specular reflectors at tissue
   interfaces.
2. Round-trip attenuation accumulated along each line (frequency dependent);
   attenuating lesions shadow what lies behind them, fluid enhances it.
3. The point-spread function: a depth-dependent lateral beam profile (narrowest
   at the focus) and an axial RF pulse; electronic noise enters before the
   receive filter, so the time-gain compensation amplifies it in the far field.
4. The envelope of the RF lines (analytic signal), time-gain compensation with
   the scanner's slider curve, and log compression into the dynamic range.
5. Scan conversion to a Cartesian pixel grid (a fan for sector probes).

The mask is the lesion's contour evaluated at the same pixel centres.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft, ndimage, signal

from nnunet_synth.phantom.anatomy import Anatomy, TissueMaps, sample_anatomy
from nnunet_synth.phantom.scanners import SCANNERS, Scanner

SAMPLES_PER_CARRIER_PERIOD = 3  # enough for the analytic (one-sided) RF spectrum
POINT_SCATTERER_DENSITY = 0.001  # fraction of samples that hold a strong scatterer (non-Rayleigh speckle)
TISSUE_STEP_MM = 0.1  # depth step on which the anatomy is evaluated (finer than any pixel)
EDGE_SHELL_MM = 0.4  # thickness of the wall region that refracts grazing beams ...
EDGE_ATTENUATION = 2.5  # ... and its attenuation (dB/cm/MHz): a shadow streak of a few dB
SPECULAR_GAIN = 1.0  # interface amplitudes (anatomy.interfaces) are in units of the parenchyma's speckle


@dataclass
class ScanGrid:
    """The beam grid of a scanner and the pixel grid it is scan-converted to."""
    scanner: Scanner
    spacing_mm: float
    dr_mm: float
    depth: np.ndarray          # (samples,) distance from the probe face along a line
    line_x: np.ndarray         # linear: lateral position of each line (mm)
    line_theta: np.ndarray     # sector: angle of each line (rad)
    pixel_x: np.ndarray        # (cols,)
    pixel_z: np.ndarray        # (rows,) depth below the probe centre

    @classmethod
    def for_scanner(cls, scanner: Scanner) -> "ScanGrid":
        dr = scanner.wavelength_mm / 2 / SAMPLES_PER_CARRIER_PERIOD  # round trip: the echo's carrier is lambda/2 in depth
        depth = (np.arange(int(np.ceil(scanner.depth_mm / dr))) + 0.5) * dr
        if scanner.geometry == "linear":
            s = scanner.depth_mm / scanner.rows
            pixel_x = (np.arange(scanner.cols) - (scanner.cols - 1) / 2) * s
            return cls(scanner, s, dr, depth, pixel_x, np.zeros(0), pixel_x, (np.arange(scanner.rows) + 0.5) * s)
        if scanner.geometry == "sector":
            R, half = scanner.sector_radius_mm, np.deg2rad(scanner.sector_angle_deg) / 2
            top = R * np.cos(half) - R  # the fan's corners lie above the probe centre
            s = (scanner.depth_mm - top) / scanner.rows
            n_lines = int(np.ceil(2 * half * (R + scanner.depth_mm) / s))
            pixel_x = (np.arange(scanner.cols) - (scanner.cols - 1) / 2) * s
            return cls(scanner, s, dr, depth, np.zeros(0), np.linspace(-half, half, n_lines), pixel_x,
                       top + (np.arange(scanner.rows) + 0.5) * s)
        raise ValueError(f"scanner {scanner.name}: geometry must be 'linear' or 'sector', got {scanner.geometry!r}")

    @property
    def sector(self) -> bool:
        return self.scanner.geometry == "sector"

    @property
    def n_lines(self) -> int:
        return len(self.line_theta) if self.sector else len(self.line_x)

    def beam_points(self, step: int = 1):
        """Cartesian x, z of every ``step``-th beam sample along each line, and its distance d from the probe face."""
        d = self.depth[::step, None]
        shape = (len(d), self.n_lines)
        if not self.sector:
            return np.broadcast_to(self.line_x[None, :], shape), np.broadcast_to(d, shape), np.broadcast_to(d, shape)
        R = self.scanner.sector_radius_mm
        r = R + d
        th = self.line_theta[None, :]
        return r * np.sin(th), r * np.cos(th) - R, np.broadcast_to(d, shape)

    def beam_direction(self):
        """Unit vector (x, z) of the beam at each line (broadcastable to the beam grid)."""
        if not self.sector:
            return np.zeros((1, len(self.line_x))), np.ones((1, len(self.line_x)))
        return np.sin(self.line_theta)[None, :], np.cos(self.line_theta)[None, :]

    def line_spacing_mm(self):
        """Distance between neighbouring lines at each depth (rows,) or (rows, 1)."""
        if not self.sector:
            return np.full((len(self.depth), 1), self.spacing_mm)
        dtheta = self.line_theta[1] - self.line_theta[0]
        return ((self.scanner.sector_radius_mm + self.depth) * dtheta)[:, None]

    def beam_index_of(self, x, z):
        """Fractional (sample, line) indices of Cartesian points, and whether they lie in the field."""
        if not self.sector:
            k = (z - 0.5 * self.dr_mm) / self.dr_mm
            l = (x - self.line_x[0]) / (self.line_x[1] - self.line_x[0])
            inside = (z >= 0) & (z <= self.scanner.depth_mm)
            return k, l, inside
        R = self.scanner.sector_radius_mm
        zc = z + R
        r = np.hypot(x, zc)
        th = np.arctan2(x, zc)
        k = (r - R - 0.5 * self.dr_mm) / self.dr_mm
        l = (th - self.line_theta[0]) / (self.line_theta[1] - self.line_theta[0])
        inside = (r >= R) & (r <= R + self.scanner.depth_mm) & (np.abs(th) <= self.line_theta[-1])
        return k, l, inside


def rf_pulse(scanner: Scanner, dr_mm: float) -> np.ndarray:
    """The axial RF pulse in depth samples: a Gaussian-windowed carrier, unit energy."""
    carrier_mm = scanner.wavelength_mm / 2
    fwhm_mm = scanner.pulse_cycles * carrier_mm
    sigma = fwhm_mm / 2.3548
    t = np.arange(-np.ceil(3 * sigma / dr_mm), np.ceil(3 * sigma / dr_mm) + 1) * dr_mm
    p = np.exp(-0.5 * (t / sigma) ** 2) * np.cos(2 * np.pi * t / carrier_mm)
    return p / np.sqrt(np.sum(p ** 2))


def lateral_beam(field: np.ndarray, sigma_lines: np.ndarray) -> np.ndarray:
    """Blur each depth row laterally with its own beam width (sigma in lines), at unit energy.

    A depth-dependent PSF is not a single convolution; filtering with a few widths
    and interpolating between them row by row is exact at those widths and smooth
    in between. The filters run in the Fourier domain (ndimage.fourier_gaussian),
    whose cost does not grow with the beam width.
    """
    lo, hi = float(sigma_lines.min()), float(sigma_lines.max())
    n_levels = int(np.clip(np.ceil(np.log(hi / lo) / np.log(1.6)) + 1, 1, 4))
    levels = np.geomspace(lo, hi, n_levels)
    n = field.shape[1]
    pad = fft.next_fast_len(n + 2 * int(np.ceil(3 * hi)) + 1, real=True)  # zero padding: no wrap-around
    spectrum = fft.rfft(field, n=pad, axis=1)
    delta = np.zeros(pad)
    delta[0] = 1.0
    blurred = []
    for s in levels:
        kernel = fft.irfft(ndimage.fourier_gaussian(fft.rfft(delta), s, n=pad), n=pad)
        out = fft.irfft(ndimage.fourier_gaussian(spectrum, (0.0, s), n=pad, axis=1), n=pad, axis=1)[:, :n]
        # Unit energy keeps the speckle's power equal to the echogenicity at every beam width.
        blurred.append(out / np.sqrt(np.sum(kernel ** 2)))
    if n_levels == 1:
        return blurred[0]
    pos = np.interp(np.log(sigma_lines), np.log(levels), np.arange(len(levels)))
    i = np.minimum(pos.astype(int), len(levels) - 2)
    w = (pos - i)[:, None]
    stack = np.stack(blurred)
    rows = np.arange(field.shape[0])
    return stack[i, rows] * (1 - w) + stack[i + 1, rows] * w


def specular_reflectors(tissue: TissueMaps, grid: ScanGrid, x, z, d) -> np.ndarray:
    """Coherent echoes where a beam crosses a tissue interface, strongest at normal incidence."""
    out = np.zeros(x.shape)
    bx, bz = grid.beam_direction()
    bx, bz = np.broadcast_to(bx, x.shape)[1:], np.broadcast_to(bz, x.shape)[1:]
    h = 0.05
    for f, amplitude, level, suppress in tissue.interfaces:
        crossing = np.signbit(f[1:]) != np.signbit(f[:-1])
        if suppress is not None:
            crossing &= ~suppress[1:]  # no capsule line through a vessel's lumen
        if not crossing.any():
            continue
        cx, cz, cd = x[1:][crossing], z[1:][crossing], d[1:][crossing]
        # Interface normal from the level function's gradient; cos^2 of the incidence angle.
        gx = level(cx + h, cz, cd) - level(cx - h, cz, cd)
        gz = level(cx, cz + h, cd + h) - level(cx, cz - h, cd - h)
        incidence = (gx * bx[crossing] + gz * bz[crossing]) / (np.hypot(gx, gz) + 1e-12)
        rows, cols = np.nonzero(crossing)
        out[rows + 1, cols] += amplitude * incidence ** 2
    return out


def edge_shadows(anatomy: Anatomy, grid: ScanGrid, x, z) -> np.ndarray:
    """Extra attenuation (dB/cm/MHz) where beams graze the wall of a cyst or vessel.

    Sound meeting a curved fluid wall tangentially is refracted away, so a thin
    dark streak runs down from each side of the structure (edge shadowing).
    """
    out = np.zeros(x.shape)
    bx, bz = (np.broadcast_to(b, x.shape) for b in grid.beam_direction())
    h = 0.05
    for level in anatomy.smooth_walled():
        f = level(x, z)
        shell = np.abs(f) < EDGE_SHELL_MM
        if not shell.any():
            continue
        sx, sz = x[shell], z[shell]
        gx, gz = level(sx + h, sz) - level(sx - h, sz), level(sx, sz + h) - level(sx, sz - h)
        grazing = np.abs(gx * bx[shell] + gz * bz[shell]) / (np.hypot(gx, gz) + 1e-12) < 0.45
        out[np.flatnonzero(shell)[grazing] // x.shape[1], np.flatnonzero(shell)[grazing] % x.shape[1]] += EDGE_ATTENUATION
    return out


def point_reflectors(points: np.ndarray, grid: ScanGrid, shape, amplitude: float) -> np.ndarray:
    out = np.zeros(shape)
    if len(points) == 0:
        return out
    k, l, inside = grid.beam_index_of(points[:, 0], points[:, 1])
    k, l = np.round(k[inside]).astype(int), np.round(l[inside]).astype(int)
    ok = (k >= 0) & (k < shape[0]) & (l >= 0) & (l < shape[1])
    np.add.at(out, (k[ok], l[ok]), amplitude)
    return out


def tgc_db(scanner: Scanner, depth_mm: np.ndarray) -> np.ndarray:
    """The scanner's gain curve: nominal attenuation compensation plus the slider settings."""
    nominal = 2 * scanner.tgc_db_per_cm_mhz * scanner.center_mhz * depth_mm / 10.0
    sliders = np.asarray(scanner.tgc_sliders_db, dtype=float)
    at = np.linspace(0, scanner.depth_mm, len(sliders))
    return nominal + np.interp(depth_mm, at, sliders)


def resolve_scanner(scanner: Scanner | str) -> Scanner:
    if isinstance(scanner, Scanner):
        return scanner
    if scanner not in SCANNERS:
        raise ValueError(f"unknown scanner {scanner!r}; known scanners: {', '.join(SCANNERS)}")
    return SCANNERS[scanner]


def simulate(scanner: Scanner | str, rng: np.random.Generator | int, image_size: int | None = None,
             anatomy: Anatomy | None = None) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """Simulate one B-mode image of ``scanner``.

    ``rng`` is a numpy Generator or an integer seed; the same seed gives the same
    arrays. ``image_size`` sets the number of rows (columns keep the scanner's
    aspect) while the field of view in mm stays, so the spacing changes.
    ``anatomy`` (from ``sample_anatomy``) images a given scene; by default one is
    drawn from ``rng``.

    Returns the image (uint8, rows x cols), the lesion mask (uint8, 0/1) and
    the pixel spacing in mm (row, column).
    """
    scanner = resolve_scanner(scanner).with_size(image_size)
    rng = np.random.default_rng(rng)
    if anatomy is None:
        anatomy = sample_anatomy(rng)
    grid = ScanGrid.for_scanner(scanner)
    shape = (len(grid.depth), grid.n_lines)

    # 1. Scatterers: Gaussian amplitudes (speckle), sparse strong points, coherent interfaces.
    # Tissue varies on a coarser scale than the RF carrier, so it is evaluated on every
    # m-th depth sample and repeated; the speckle itself is drawn at full resolution.
    m = max(1, int(round(TISSUE_STEP_MM / grid.dr_mm)))
    x, z, d = grid.beam_points(step=m)
    tissue = anatomy.evaluate(x, z, d)
    tissue.attenuation += edge_shadows(anatomy, grid, x, z)
    echo, atten = (np.repeat(a, m, axis=0)[:shape[0]] for a in (tissue.echo, tissue.attenuation))
    reflectors = specular_reflectors(tissue, grid, x, z, d)
    # Interfaces are not uniformly bright: their reflectivity drifts along their length.
    on = reflectors != 0
    reflectors[on] *= np.clip(1.0 + anatomy.interface_waves(x[on], z[on]), 0.2, None)
    scatter = rng.standard_normal(shape) * np.sqrt(echo)
    strong = rng.random(shape) < POINT_SCATTERER_DENSITY
    scatter[strong] *= 2.5
    # A specular echo is as strong as the speckle of about SPECULAR_GAIN ** 2 times the
    # parenchyma's echogenicity, whatever the scanner's sampling (the pulse spans more samples).
    per_sample = SPECULAR_GAIN * np.sqrt(scanner.pulse_cycles * SAMPLES_PER_CARRIER_PERIOD)
    scatter[np.arange(0, shape[0], m)[:reflectors.shape[0]]] += reflectors * per_sample
    scatter += point_reflectors(anatomy.lesion.calcifications, grid, shape, 3.0 * per_sample)

    # 2. Round-trip attenuation along each line (dB = 2 * alpha * f * path).
    path_db = 2 * scanner.center_mhz * np.cumsum(atten, axis=0) * grid.dr_mm / 10.0
    scatter *= 10.0 ** (-path_db / 20.0)

    # 3. PSF: lateral beam (depth dependent, focused), noise, then the axial RF pulse.
    fwhm = scanner.lateral_fwhm_mm * np.sqrt(1 + ((grid.depth - scanner.focus_mm) / scanner.focal_zone_mm) ** 2)
    sigma_lines = fwhm / 2.3548 / grid.line_spacing_mm()[:, 0]
    field = lateral_beam(scatter, sigma_lines)
    field += rng.standard_normal(field.shape) * 10.0 ** (scanner.noise_db / 20.0)
    # Convolving with the analytic pulse (pulse + i * its Hilbert transform) gives the
    # analytic RF signal in one pass; its magnitude is the envelope.
    analytic_pulse = signal.hilbert(rf_pulse(scanner, grid.dr_mm))
    iq = signal.fftconvolve(field, analytic_pulse[:, None], mode="same", axes=0)

    # 4. Envelope; decimate to the tissue step (anti-aliased), then TGC and log compression.
    # Speckle of echogenicity 1 has a mean squared envelope of 2.
    envelope = ndimage.gaussian_filter1d(np.abs(iq), 0.35 * grid.spacing_mm / grid.dr_mm, axis=0)[::m]
    depth = grid.depth[::m]
    level_db = 20 * np.log10(envelope / np.sqrt(2) + 1e-6) + tgc_db(scanner, depth)[:, None] + scanner.gain_db
    gray = np.clip((level_db + scanner.dynamic_range_db) / scanner.dynamic_range_db, 0.0, 1.0) * 255.0

    # 5. Scan conversion; outside a sector's fan stays black.
    px, pz = np.meshgrid(grid.pixel_x, grid.pixel_z)
    k, l, inside = grid.beam_index_of(px, pz)
    image = ndimage.map_coordinates(gray, [k / m, l], order=1, mode="nearest")
    image = np.where(inside, image, 0.0)
    image = np.round(image).astype(np.uint8)
    mask = (anatomy.inside_lesion(px, pz) & inside).astype(np.uint8)
    return image, mask, (float(grid.spacing_mm), float(grid.spacing_mm))
