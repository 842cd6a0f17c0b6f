"""The imaged anatomy, in millimetres and independent of the scanner.

Coordinates: ``x`` lateral (0 under the probe centre), ``z`` depth below the
centre of the probe face, and ``d`` distance from the probe face along the
beam. Superficial layers (skin, fat, muscle) follow ``d`` because the skin is
pressed against the probe and takes its shape; deeper structures (the organ,
its lesion, a vessel) follow ``x, z``.

The scene is a neck/breast-like cross-section: skin, subcutaneous fat with
septa, a striated muscle layer, an organ with a bright capsule (thyroid-like),
sometimes a vessel beside it, a deep fascia, and one lesion inside the organ.
A tissue is described by its echogenicity (scatterer power relative to the
organ's parenchyma) and its attenuation (dB/cm/MHz). Specular interfaces are
listed separately because they reflect coherently rather than as speckle.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

LESION_KINDS = ("hypoechoic", "isoechoic_rim")
LESION_SHAPES = ("round", "lobulated", "irregular")
POSTERIOR_EFFECTS = ("enhancement", "shadowing", "none")

# The field every scanner sees: lesions are placed inside it so that no scanner crops them.
COMMON_HALF_WIDTH_MM = 14.0
COMMON_MIN_DEPTH_MM = 7.0


@dataclass
class Waves:
    """A smooth random field: a sum of plane waves (cheap to evaluate anywhere, scanner independent)."""
    kx: np.ndarray
    kz: np.ndarray
    phase: np.ndarray
    amplitude: np.ndarray

    @classmethod
    def sample(cls, rng: np.random.Generator, n: int, wavelength_mm: tuple[float, float], total_amplitude: float):
        wavelength = rng.uniform(*wavelength_mm, n)
        angle = rng.uniform(0, np.pi, n)
        k = 2 * np.pi / wavelength
        amplitude = rng.uniform(0.5, 1.0, n)
        amplitude *= total_amplitude / amplitude.sum()
        return cls(k * np.cos(angle), k * np.sin(angle), rng.uniform(0, 2 * np.pi, n), amplitude)

    def __call__(self, x, z):
        out = np.zeros(np.broadcast(x, z).shape)
        for kx, kz, p, a in zip(self.kx, self.kz, self.phase, self.amplitude):
            out += a * np.cos(kx * x + kz * z + p)
        return out


def polar_contour(phi, amplitudes: np.ndarray, phases: np.ndarray):
    """Relative radius 1 + sum_k a_k cos(k phi + p_k), k = 2, 3, ...: lobes and irregularity of a closed contour."""
    k = np.arange(2, 2 + len(amplitudes)).reshape((-1,) + (1,) * np.ndim(phi))
    return 1.0 + np.sum(amplitudes.reshape(k.shape) * np.cos(k * phi + phases.reshape(k.shape)), axis=0)


def along_lines(f, x, z, d):
    """``f(x, z, d)`` where f's costly part depends on x alone (a layer boundary).

    Linear probes give x constant down every line (a broadcast array), so the
    boundary is computed once per line instead of once per sample.
    """
    if x.ndim == 2 and x.strides[0] == 0:
        return np.broadcast_to(f(x[:1], z, d), x.shape)
    return f(x, z, d)


@dataclass
class TissueMaps:
    echo: np.ndarray              # scatterer power relative to the organ's parenchyma
    attenuation: np.ndarray       # dB/cm/MHz
    interfaces: list              # (level field, amplitude, level function, where to suppress or None)


@dataclass
class Lesion:
    x: float
    z: float
    radius_mm: float
    aspect: float                 # depth / width; > 1 is "taller than wide"
    rotation: float
    shape: str
    harmonics: np.ndarray         # radial Fourier amplitudes of the contour, index k = 2, 3, ...
    phases: np.ndarray
    kind: str
    echo: float                   # interior echogenicity
    rim_echo: float               # isoechoic_rim: echogenicity of the rim (dark halo or bright)
    rim_mm: float
    posterior: str
    attenuation: float            # dB/cm/MHz inside the lesion (sets enhancement or shadowing)
    texture: Waves
    calcifications: np.ndarray    # (n, 2) x, z of bright foci (shadowing lesions)

    def contour_radius(self, phi):
        """Relative boundary radius at polar angle ``phi`` (1 = a plain ellipse)."""
        return np.maximum(polar_contour(phi, self.harmonics, self.phases), 0.35)

    def signed_distance(self, x, z):
        """Approximate distance in mm to the boundary along the ray from the centre; negative inside."""
        c, s = np.cos(self.rotation), np.sin(self.rotation)
        u = c * (x - self.x) + s * (z - self.z)
        v = -s * (x - self.x) + c * (z - self.z)
        ax, az = self.radius_mm, self.radius_mm * self.aspect
        un, vn = u / ax, v / az
        rho = np.hypot(un, vn)
        phi = np.arctan2(vn, un)
        r = self.contour_radius(phi)
        radius_mm = r * np.hypot(ax * np.cos(phi), az * np.sin(phi))
        return (rho / r - 1.0) * radius_mm

    def extent_mm(self) -> float:
        """An upper bound of the distance from the centre to any boundary point."""
        phi = np.linspace(0, 2 * np.pi, 256, endpoint=False)
        return float(self.contour_radius(phi).max() * self.radius_mm * max(1.0, self.aspect))


@dataclass
class Anatomy:
    skin_mm: float
    fat_mm: float
    muscle_mm: float
    layer_waves: Waves            # undulation of the layer boundaries
    fibre_angle: float
    fibre_period_mm: float
    septa: Waves
    organ_x: float
    organ_z: float
    organ_a: float                # lateral half-width
    organ_b: float                # half-depth
    organ_shape: np.ndarray       # radial Fourier amplitudes (k = 2, 3, ...) and phases of the capsule, shape (2, n)
    organ_texture: Waves
    deep_fascia_mm: float         # below the organ's posterior capsule
    tissue_attenuation: float     # dB/cm/MHz: varies between patients, which the scanner's TGC does not know
    vessel: tuple[float, float, float] | None  # x, z, radius
    interface_waves: Waves        # brightness variation along specular interfaces
    lesion: Lesion = field(repr=False)

    # ---- layers (the second argument of layer_waves only shifts the phase, so that each
    # boundary undulates differently) ------------------------------------------------------
    def fat_top(self, x):
        return self.skin_mm + 0.3 * self.layer_waves(x, 0.0)

    def muscle_top(self, x):
        return self.skin_mm + self.fat_mm + 0.6 * self.layer_waves(x, 3.0)

    def muscle_bottom(self, x):
        return self.skin_mm + self.fat_mm + self.muscle_mm + 0.8 * self.layer_waves(x, 7.0)

    def organ_level(self, x, z):
        """< 0 inside the organ (a perturbed ellipse), 0 on its capsule."""
        u, v = (x - self.organ_x) / self.organ_a, (z - self.organ_z) / self.organ_b
        return np.hypot(u, v) / polar_contour(np.arctan2(v, u), *self.organ_shape) - 1.0

    def deep_fascia(self, x):
        return self.organ_z + self.organ_b + self.deep_fascia_mm + 1.5 * self.layer_waves(x, 11.0)

    def vessel_level(self, x, z):
        if self.vessel is None:
            return np.full(np.broadcast(x, z).shape, np.inf)
        vx, vz, vr = self.vessel
        return np.hypot(x - vx, z - vz) - vr

    # ---- tissue properties --------------------------------------------------------------
    def interfaces(self):
        """Specular reflectors: (name, level function of x, z, d in ~mm that changes sign on it, amplitude)."""
        out = [
            ("skin", lambda x, z, d: d - 0.25, 4.0),                          # probe/skin contact
            ("fascia", lambda x, z, d: d - self.muscle_top(x), 1.5),          # superficial fascia
            ("muscle", lambda x, z, d: d - self.muscle_bottom(x), 2.0),       # deep fascia of the muscle
            ("capsule", lambda x, z, d: self.organ_level(x, z) * self.organ_b, 2.0),
            ("deep", lambda x, z, d: z - self.deep_fascia(x), 2.5),           # prevertebral-like fascia
        ]
        if self.vessel is not None:
            out.append(("vessel", lambda x, z, d: self.vessel_level(x, z), 2.5))
        return out

    def evaluate(self, x, z, d) -> "TissueMaps":
        """Echogenicity, attenuation (dB/cm/MHz) and interface level fields at points x, z, d."""
        shape = np.broadcast(x, z, d).shape
        x, z, d = (np.broadcast_to(a, shape) for a in (x, z, d))
        levels = {name: (along_lines(f, x, z, d), amplitude, f) for name, f, amplitude in self.interfaces()}
        atten = np.full(shape, self.tissue_attenuation)

        # Deep layer between the muscle and the fascia: muscle-like with coarse fibres.
        echo = 0.22 + 0.9 * self._fibres(x, z, self.fibre_angle * 0.5, self.fibre_period_mm * 1.6)
        below_fascia = levels["deep"][0] > 0
        echo[below_fascia] = 0.7 + 0.3 * self.septa(x[below_fascia], z[below_fascia])

        organ = levels["capsule"][0] < 0
        echo[organ] = np.clip(1.0 + self.organ_texture(x[organ], z[organ]), 0.4, None)

        # Superficial layers in probe-depth d override whatever lies underneath.
        fat_top = along_lines(lambda xx, zz, dd: dd - self.fat_top(xx), x, z, d)
        muscle = (levels["fascia"][0] >= 0) & (levels["muscle"][0] < 0)
        echo[muscle] = 0.08 + 0.9 * self._fibres(x[muscle], d[muscle], self.fibre_angle, self.fibre_period_mm)
        fat = (fat_top >= 0) & (levels["fascia"][0] < 0)
        # Fat lobules are dark; the connective septa between them are thin bright strands.
        septa = np.abs(self.septa(x[fat], d[fat] * 3.0))
        echo[fat] = 0.1 + 1.5 * (septa < 0.06)
        skin = fat_top < 0
        echo[skin] = 1.9
        atten[skin | fat] = self.tissue_attenuation * 1.2

        # Fascia and capsules are also a thin band of denser connective tissue.
        for name, (level, amplitude, _) in levels.items():
            if name != "skin":
                echo += amplitude * np.exp(-(level / 0.45) ** 2)

        lumen = np.zeros(shape, bool)
        if self.vessel is not None:
            lumen = levels["vessel"][0] < 0
            echo[lumen] = 0.004
            atten[lumen] = 0.15  # blood attenuates little: posterior enhancement behind the vessel

        self._paint_lesion(x, z, echo, atten)
        return TissueMaps(echo, atten, [(lv, amp, f, lumen if name not in ("vessel", "skin") else None)
                                        for name, (lv, amp, f) in levels.items()])

    def _fibres(self, x, depth, angle, period):
        """Thin bright striations of muscle fascicles, broken up along their length."""
        s = (x * np.sin(angle) + depth * np.cos(angle)) / period
        lines = (0.5 + 0.5 * np.cos(2 * np.pi * s)) ** 6
        # Each fascicle fades in and out along its length at its own (pseudo-random) phase.
        breaks = np.clip(0.5 + 0.8 * np.cos(2 * np.pi * x / (4.0 * period) + 2.4 * np.round(s) ** 2), 0.0, 1.0)
        return lines * breaks

    def _paint_lesion(self, x, z, echo, atten):
        les = self.lesion
        near = (np.abs(x - les.x) < les.extent_mm() + 2) & (np.abs(z - les.z) < les.extent_mm() + 2)
        if not near.any():
            return
        xs, zs = x[near], z[near]
        sd = les.signed_distance(xs, zs)
        # A 0.15 mm soft edge avoids a staircase boundary in the fine beam grid.
        inside = np.clip(0.5 - sd / 0.3, 0.0, 1.0)
        interior = les.echo * np.clip(1.0 + les.texture(xs, zs), 0.2, None)
        if les.kind == "isoechoic_rim":
            rim = np.clip(0.5 - (np.abs(sd + les.rim_mm / 2) - les.rim_mm / 2) / 0.3, 0.0, 1.0)
            interior = interior * (1 - rim) + les.rim_echo * rim
        e = echo[near]
        echo[near] = e * (1 - inside) + interior * inside
        a = atten[near]
        atten[near] = a * (1 - inside) + les.attenuation * inside

    def smooth_walled(self):
        """Level functions (mm) of fluid-filled, smooth-walled structures: they refract at their sides."""
        out = []
        if self.vessel is not None:
            out.append(self.vessel_level)
        if self.lesion.posterior == "enhancement" and self.lesion.shape != "irregular":
            out.append(self.lesion.signed_distance)
        return out

    def inside_lesion(self, x, z):
        return self.lesion.signed_distance(x, z) < 0


def sample_lesion(rng: np.random.Generator, anatomy_bounds, kind=None, shape=None, posterior=None) -> Lesion:
    organ_x, organ_z, organ_a, organ_b, vessel = anatomy_bounds
    kind = kind or rng.choice(LESION_KINDS, p=[0.6, 0.4])
    shape = shape or rng.choice(LESION_SHAPES, p=[0.35, 0.35, 0.3])
    if posterior is None:
        p = {"hypoechoic": [0.3, 0.3, 0.4], "isoechoic_rim": [0.3, 0.1, 0.6]}[kind]
        posterior = rng.choice(POSTERIOR_EFFECTS, p=p)

    n = {"round": 2, "lobulated": 4, "irregular": 11}[shape]
    k = np.arange(2, 2 + n)
    if shape == "round":
        harmonics = rng.uniform(0.0, 0.04, n)
    elif shape == "lobulated":
        harmonics = rng.uniform(0.0, 0.05, n)
        harmonics[rng.integers(1, n)] = rng.uniform(0.08, 0.15)  # 3 to 5 gentle lobes
    else:
        harmonics = rng.uniform(0.3, 1.0, n) * 0.28 / k ** 0.7
    phases = rng.uniform(0, 2 * np.pi, n)

    if kind == "hypoechoic":
        cystic = posterior == "enhancement" and rng.random() < 0.7
        echo = rng.uniform(0.005, 0.02) if cystic else rng.uniform(0.03, 0.15)
        rim_echo, rim_mm = 0.0, 0.0
    else:
        echo = rng.uniform(0.7, 1.4)
        dark_halo = rng.random() < 0.7
        rim_echo = rng.uniform(0.03, 0.12) if dark_halo else rng.uniform(3.0, 5.0)
        rim_mm = rng.uniform(0.8, 1.6)
    attenuation = {"enhancement": rng.uniform(0.0, 0.1), "shadowing": rng.uniform(1.3, 2.5),
                   "none": rng.uniform(0.45, 0.6)}[posterior]

    radius = rng.uniform(2.5, 7.0)
    aspect = float(np.exp(rng.uniform(np.log(0.7), np.log(1.4))))
    for _ in range(200):
        lx = rng.uniform(organ_x - organ_a, organ_x + organ_a)
        lz = rng.uniform(organ_z - organ_b, organ_z + organ_b)
        lesion = Lesion(lx, lz, radius, aspect, rng.uniform(0, np.pi), str(shape), harmonics, phases, str(kind),
                        float(echo), float(rim_echo), float(rim_mm), str(posterior), float(attenuation),
                        Waves.sample(rng, 4, (1.5, 5.0), 0.25), np.zeros((0, 2)))
        ext = lesion.extent_mm()
        inside_organ = np.hypot((lx - organ_x) / organ_a, (lz - organ_z) / organ_b) < 0.9 - ext / min(organ_a, organ_b)
        visible = abs(lx) + ext < COMMON_HALF_WIDTH_MM and lz - ext > COMMON_MIN_DEPTH_MM
        clear_of_vessel = vessel is None or np.hypot(lx - vessel[0], lz - vessel[1]) > ext + vessel[2] + 1.0
        if inside_organ and visible and clear_of_vessel:
            break
        radius = max(2.5, radius * 0.97)  # a lesion too big for this organ shrinks until it fits
    else:
        raise RuntimeError("could not place a lesion inside the organ; the anatomy sampler is inconsistent")
    if posterior == "shadowing":
        # Bright calcific foci inside: the shadow's physical cause.
        m = int(rng.integers(3, 10))
        r = radius * np.sqrt(rng.uniform(0, 0.5, m))
        a = rng.uniform(0, 2 * np.pi, m)
        lesion.calcifications = np.stack([lx + r * np.cos(a), lz + r * aspect * np.sin(a)], axis=1)
    return lesion


def sample_anatomy(rng: np.random.Generator, kind: str | None = None, shape: str | None = None,
                   posterior: str | None = None) -> Anatomy:
    """A random cross-section; ``kind``, ``shape`` and ``posterior`` fix the lesion's type when given."""
    for name, value, allowed in (("kind", kind, LESION_KINDS), ("shape", shape, LESION_SHAPES),
                                 ("posterior", posterior, POSTERIOR_EFFECTS)):
        if value is not None and value not in allowed:
            raise ValueError(f"lesion {name} must be one of {allowed}, got {value!r}")
    skin = rng.uniform(1.2, 2.0)
    fat = rng.uniform(1.5, 4.0)
    muscle = rng.uniform(2.5, 5.5)
    organ_a = rng.uniform(14.0, 20.0)
    organ_b = rng.uniform(8.0, 11.5)
    organ_x = rng.uniform(-5.0, 5.0)
    organ_z = skin + fat + muscle + organ_b + rng.uniform(0.3, 1.5)
    vessel = None
    if rng.random() < 0.6:
        side = rng.choice([-1.0, 1.0])
        vr = rng.uniform(3.5, 5.5)
        vessel = (float(organ_x + side * (organ_a - 0.3 * vr)), float(organ_z + 0.25 * organ_b), float(vr))
    anatomy = Anatomy(
        skin_mm=skin, fat_mm=fat, muscle_mm=muscle,
        layer_waves=Waves.sample(rng, 3, (15.0, 40.0), 1.0),
        fibre_angle=rng.uniform(-0.25, 0.25),  # striations nearly parallel to the skin
        fibre_period_mm=rng.uniform(0.7, 1.3),
        septa=Waves.sample(rng, 3, (6.0, 20.0), 1.0),
        organ_x=organ_x, organ_z=organ_z, organ_a=organ_a, organ_b=organ_b,
        organ_shape=np.stack([rng.uniform(0.0, 0.07, 3), rng.uniform(0, 2 * np.pi, 3)]),
        organ_texture=Waves.sample(rng, 6, (2.5, 10.0), 0.3),
        deep_fascia_mm=rng.uniform(2.0, 6.0),
        tissue_attenuation=rng.uniform(0.45, 0.7),
        vessel=vessel,
        interface_waves=Waves.sample(rng, 4, (4.0, 16.0), 0.9),
        lesion=None,
    )
    anatomy.lesion = sample_lesion(rng, (organ_x, organ_z, organ_a, organ_b, vessel), kind, shape, posterior)
    return anatomy
