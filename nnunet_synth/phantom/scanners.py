"""The simulated scanners: acquisition parameters only, no anatomy.

The same anatomy imaged by two scanners differs the way images from two real
scanners do: in resolution (point-spread function and pixel spacing), in the
grey-level mapping (dynamic range, gain, time-gain compensation), in noise and
in scan geometry (linear strip or sector fan). Those are the differences a
segmentation model trained on one scanner has to survive on the others.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

SPEED_OF_SOUND_MM_PER_US = 1.54


@dataclass(frozen=True)
class Scanner:
    name: str
    description: str
    geometry: str                 # "linear" (rectangular strip) or "sector" (convex fan)
    depth_mm: float               # imaging depth below the probe surface
    width_mm: float               # linear: aperture width; sector: unused (the fan sets the width)
    rows: int                     # default image size; pixel spacing = field of view / size
    cols: int
    center_mhz: float             # transmit frequency: sets the speckle's axial carrier and attenuation
    pulse_cycles: float           # axial PSF: pulse length in carrier cycles (FWHM of the envelope)
    lateral_fwhm_mm: float        # lateral PSF width at the focus
    focus_mm: float               # the beam is narrowest here ...
    focal_zone_mm: float          # ... and sqrt(2) times as wide this far above or below it
    dynamic_range_db: float       # log-compression window shown from black to white
    gain_db: float                # overall receive gain (white = 0 dB after gain)
    tgc_db_per_cm_mhz: float      # attenuation the scanner's time-gain compensation assumes
    tgc_sliders_db: tuple[float, ...]  # the sonographer's slider settings, evenly spaced over the depth
    noise_db: float               # electronic noise relative to the echo of unattenuated parenchyma
    sector_angle_deg: float = 0.0       # sector only: opening angle of the fan
    sector_radius_mm: float = 0.0       # sector only: radius of the convex probe face

    @property
    def wavelength_mm(self) -> float:
        return SPEED_OF_SOUND_MM_PER_US / self.center_mhz

    def with_size(self, image_size: int | None) -> "Scanner":
        """The same scanner with ``image_size`` rows (columns keep the aspect); the field of view stays."""
        if image_size is None:
            return self
        cols = max(8, round(self.cols * image_size / self.rows))
        return replace(self, rows=int(image_size), cols=int(cols))


# A: a high-frequency linear probe as used for thyroid and breast (the training scanner).
# B: a low-frequency convex probe: sector fan, coarse PSF, deeper field, darker far field.
# C: a cheap portable linear probe: lower frequency, coarser pixels, narrow dynamic
#    range (more contrast), much more electronic noise, brighter near field.
SCANNERS: dict[str, Scanner] = {
    d.name: d for d in (
        Scanner("A", "linear 7.5 MHz, fine PSF, 55 dB, 0.31 mm pixels",
               geometry="linear", depth_mm=40.0, width_mm=40.0, rows=128, cols=128,
               center_mhz=7.5, pulse_cycles=2.0, lateral_fwhm_mm=0.7, focus_mm=18.0, focal_zone_mm=16.0,
               dynamic_range_db=55.0, gain_db=-24.0, tgc_db_per_cm_mhz=0.5,
               tgc_sliders_db=(-1, 0, 0, 0, 0, 0, 1, 2), noise_db=-52.0),
        Scanner("B", "convex 3.5 MHz sector, coarse PSF, 50 dB, darker far field, 0.5 mm pixels",
               geometry="sector", depth_mm=60.0, width_mm=0.0, rows=128, cols=176,
               center_mhz=3.5, pulse_cycles=2.5, lateral_fwhm_mm=2.2, focus_mm=35.0, focal_zone_mm=25.0,
               dynamic_range_db=50.0, gain_db=-21.0, tgc_db_per_cm_mhz=0.4,
               tgc_sliders_db=(-6, -3, 0, 0, -2, -5, -8, -11), noise_db=-48.0,
               sector_angle_deg=70.0, sector_radius_mm=15.0),
        Scanner("C", "portable linear 5 MHz, 42 dB, noisy, bright near field, 0.4 mm pixels",
               geometry="linear", depth_mm=44.8, width_mm=51.2, rows=112, cols=128,
               center_mhz=5.0, pulse_cycles=3.0, lateral_fwhm_mm=1.3, focus_mm=16.0, focal_zone_mm=20.0,
               dynamic_range_db=42.0, gain_db=-17.0, tgc_db_per_cm_mhz=0.55,
               tgc_sliders_db=(5, 3, 2, 0, 0, 0, 0, -1), noise_db=-34.0),
    )
}
