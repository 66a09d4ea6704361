"""ShapesWorld: a synthetic image world whose every attribute is known.

Each 64 x 64 RGB image holds one to three objects on a background. An object has a shape, a colour, a
size and a position; the positions are four slots (left, right, top, bottom) laid out so that two objects
never overlap. (A centre slot does not fit: objects large enough for a 64-pixel captioner to tell a star
from a circle at the small size would overlap it.) Captions come from a small grammar with some variety
(determiner, synonyms, each attribute before or after the noun), so a captioner has to represent the
attributes rather than memorise one string. Every image carries its ground-truth record, which lets the
evaluation check whether a concept's words are *true* of the images it explains.

Examples
--------
>>> from mmconcepts.data.shapesworld import sample_scene, render, caption, canonical_caption
>>> import random
>>> scene = sample_scene(random.Random(0))
>>> image = render(scene)
>>> image.size
(64, 64)
>>> canonical_caption(scene)
'a small red triangle at the top and a small purple triangle at the bottom'
>>> caption(scene, random.Random(1))
'a small triangle in red at the top and a small triangle at the bottom in purple'
"""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from mmconcepts.errors import MMConceptsError, check_count
from mmconcepts.outputs import OutputFolder

IMAGE_SIZE = 64

SHAPES = ("circle", "square", "triangle", "star")
COLOURS = {
    "red": (220, 40, 40),
    "green": (30, 160, 60),
    "blue": (40, 80, 225),
    "yellow": (240, 215, 30),
    "purple": (140, 50, 190),
    "orange": (250, 135, 20),
}
#: Radius in pixels of the circle that bounds each object.
SIZES = {"small": 7.0, "large": 11.0}
#: Slot centres; with the radii above and the jitter below, objects in different slots never overlap
#: (neighbouring centres are 25.5 px apart, at least 22.6 px after jitter, two large radii make 22).
POSITIONS = {
    "left": (14, 32),
    "right": (50, 32),
    "top": (32, 14),
    "bottom": (32, 50),
}
BACKGROUNDS = {"white": (245, 245, 245), "grey": (150, 150, 150), "black": (25, 25, 25), "beige": (225, 210, 180)}
#: Largest shift of an object from its slot centre, in pixels.
JITTER = 1

#: Words the grammar may use for each attribute value (first one is canonical).
SYNONYMS = {
    "large": ("large", "big"),
    "small": ("small", "little"),
    "left": ("left",),
    "right": ("right",),
    "top": ("top",),
    "bottom": ("bottom",),
}
POSITION_PHRASES = {
    "left": "on the {w}",
    "right": "on the {w}",
    "top": "at the {w}",
    "bottom": "at the {w}",
}
#: The order in which a caption lists the objects (reading order).
CAPTION_ORDER = ("top", "left", "right", "bottom")
ATTRIBUTES = ("shape", "colour", "size", "position")


@dataclass(frozen=True)
class ShapeObject:
    shape: str
    colour: str
    size: str
    position: str
    x: float
    y: float


@dataclass(frozen=True)
class Scene:
    background: str
    objects: tuple[ShapeObject, ...]

    def attributes(self) -> dict:
        """The ground-truth record stored with every image."""
        return {"background": self.background, "objects": [asdict(o) for o in self.objects]}


def attribute_words(value: str) -> tuple[str, ...]:
    """Every word the grammar may use for an attribute value (``"large"`` -> ``("large", "big")``)."""
    return SYNONYMS.get(value, (value,))


def vocabulary() -> list[str]:
    """All words the caption grammar can produce."""
    words = {"a", "one", "and", ",", "on", "at", "the", "there", "is", "in", "of", "size"}
    words.update(SHAPES, COLOURS)
    for value in list(SIZES) + list(POSITIONS):
        words.update(attribute_words(value))
    return sorted(words)


def sample_scene(rng: random.Random, n_objects: int | None = None) -> Scene:
    """Draw a random scene: 1-3 objects in distinct slots, random attributes, a random background."""
    n = n_objects if n_objects is not None else rng.randint(1, 3)
    slots = rng.sample(sorted(POSITIONS), n)
    objects = []
    for slot in sorted(slots, key=CAPTION_ORDER.index):
        cx, cy = POSITIONS[slot]
        objects.append(
            ShapeObject(
                shape=rng.choice(SHAPES),
                colour=rng.choice(sorted(COLOURS)),
                size=rng.choice(sorted(SIZES)),
                position=slot,
                x=cx + rng.uniform(-JITTER, JITTER),
                y=cy + rng.uniform(-JITTER, JITTER),
            )
        )
    return Scene(background=rng.choice(sorted(BACKGROUNDS)), objects=tuple(objects))


def _polygon(obj: ShapeObject) -> list[tuple[float, float]] | None:
    r = SIZES[obj.size]
    if obj.shape == "square":
        h = r * 0.82
        return [(obj.x - h, obj.y - h), (obj.x + h, obj.y - h), (obj.x + h, obj.y + h), (obj.x - h, obj.y + h)]
    if obj.shape == "triangle":
        return [
            (obj.x + r * math.cos(math.radians(a)), obj.y - r * math.sin(math.radians(a))) for a in (90, 210, 330)
        ]
    if obj.shape == "star":
        points = []
        for i in range(10):
            radius = r if i % 2 == 0 else r * 0.42
            angle = math.radians(90 + 36 * i)
            points.append((obj.x + radius * math.cos(angle), obj.y - radius * math.sin(angle)))
        return points
    return None


def _inside(point: tuple[float, float], polygon: list[tuple[float, float]]) -> bool:
    """Whether ``point`` lies inside ``polygon`` (even-odd rule)."""
    x, y = point
    inside = False
    for (ax, ay), (bx, by) in zip(polygon, polygon[1:] + polygon[:1]):
        if (ay > y) != (by > y) and x < ax + (y - ay) * (bx - ax) / (by - ay):
            inside = not inside
    return inside


def object_at(record: dict, x: float, y: float) -> dict | None:
    """The object of an image's attribute record (:meth:`Scene.attributes`) drawn at pixel point ``(x, y)``, as
    its record (the last drawn where objects overlap), or ``None`` on the background. The extent is the drawn
    one: a disc of the size's radius, or the shape's polygon.

    Examples
    --------
    >>> record = {"background": "white", "objects": [{"shape": "square", "colour": "red", "size": "large",
    ...                                              "position": "left", "x": 16.0, "y": 32.0}]}
    >>> object_at(record, 16, 32)["shape"], object_at(record, 40, 32)
    ('square', None)
    """
    for obj in reversed(record.get("objects") or []):
        shape = ShapeObject(**{k: obj[k] for k in ("shape", "colour", "size", "position", "x", "y")})
        polygon = _polygon(shape)
        r = SIZES[shape.size]
        if polygon is None and (x - shape.x) ** 2 + (y - shape.y) ** 2 <= r * r:
            return obj
        if polygon is not None and _inside((x, y), polygon):
            return obj
    return None


def render(scene: Scene) -> Image.Image:
    """Draw a scene as a 64 x 64 RGB image."""
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        fill = COLOURS[obj.colour]
        polygon = _polygon(obj)
        if polygon is None:
            r = SIZES[obj.size]
            draw.ellipse([obj.x - r, obj.y - r, obj.x + r, obj.y + r], fill=fill)
        else:
            draw.polygon(polygon, fill=fill)
    return image


#: Chance that an attribute is said before the noun ("a big red circle") rather than after it ("a circle of
#: big size in red"). Below 0.5 the noun is the likeliest word after the determiner, so a greedy captioner
#: names the shape first, while the words it could have said there instead (the object's size, colour and
#: position) keep some probability: the word order varies as in real captions.
PRE_NOUN = 0.25


def _object_phrase(obj: ShapeObject, rng: random.Random) -> str:
    det = rng.choice(("a", "one"))
    size = rng.choice(attribute_words(obj.size))
    position = rng.choice(attribute_words(obj.position))
    forms = {  # attribute -> (before the noun, after the noun)
        "size": (size, f"of {size} size"),
        "colour": (obj.colour, f"in {obj.colour}"),
        "position": (position, POSITION_PHRASES[obj.position].format(w=position)),
    }
    before = [a for a in forms if rng.random() < PRE_NOUN]
    after = [a for a in forms if a not in before]
    rng.shuffle(before)
    rng.shuffle(after)
    return " ".join([det, *(forms[a][0] for a in before), obj.shape, *(forms[a][1] for a in after)])


def caption(scene: Scene, rng: random.Random) -> str:
    """One caption of the scene drawn from the grammar.

    The objects come in reading order, each as one phrase: a determiner, the attributes said before the noun
    (in any order), the noun, then the others as phrases ("on the left", "in red", "of big size"), e.g.
    "a big circle in red on the left , one square ... and ...". So where a caption names a shape, the words
    that could have come instead (this object's size, colour and position) are all true of the image.
    """
    phrases = [_object_phrase(o, rng) for o in scene.objects]
    if len(phrases) == 1:
        text = phrases[0]
    else:
        text = " , ".join(phrases[:-1]) + " and " + phrases[-1]
    if rng.random() < 0.2:
        text = "there is " + text
    return text


def canonical_caption(scene: Scene) -> str:
    """The caption with every choice fixed to its first option (a, canonical words, position last)."""
    phrases = []
    for obj in scene.objects:
        pp = POSITION_PHRASES[obj.position].format(w=attribute_words(obj.position)[0])
        phrases.append(f"a {obj.size} {obj.colour} {obj.shape} {pp}")
    return phrases[0] if len(phrases) == 1 else " , ".join(phrases[:-1]) + " and " + phrases[-1]


def parse_caption(text: str) -> list[dict]:
    """Read the objects back out of a caption of this grammar (used to score a captioner).

    The grammar separates object phrases with "," and "and"; each phrase names one object. Returns one
    ``{"shape", "colour", "size", "position"}`` dict per phrase, ``None`` for an attribute it does not name.

    Examples
    --------
    >>> parse_caption("one big circle in red on the left and a square")  # doctest: +NORMALIZE_WHITESPACE
    [{'shape': 'circle', 'colour': 'red', 'size': 'large', 'position': 'left'},
     {'shape': 'square', 'colour': None, 'size': None, 'position': None}]
    """
    reverse = {w: value for value, words in SYNONYMS.items() for w in words}
    words = text.lower().replace(",", " , ").split()
    phrases: list[list[str]] = [[]]
    for word in words:
        if word in (",", "and"):
            phrases.append([])
        else:
            phrases[-1].append(word)
    objects = []
    for phrase in phrases:
        if not phrase:
            continue
        obj = {a: None for a in ATTRIBUTES}
        for word in phrase:
            if word in SHAPES:
                obj["shape"] = word
            elif word in COLOURS:
                obj["colour"] = word
            elif reverse.get(word) in SIZES:
                obj["size"] = reverse[word]
            elif reverse.get(word) in POSITIONS:
                obj["position"] = reverse[word]
        objects.append(obj)
    return objects


def write_dataset(out: str | os.PathLike, n: int, seed: int, split: str = "train", n_captions: int = 3) -> Path:
    """Write ``n`` images and ``captions.jsonl`` into ``out``, atomically.

    Every line reads ``{"image": "images/000001.png", "captions": [...], "attributes": {...},
    "split": split}``. The same seed always gives the same dataset.

    Examples
    --------
    >>> from mmconcepts.data import open_dataset
    >>> write_dataset("shapes/train", n=8, seed=0)
    PosixPath('shapes/train')
    >>> sample = open_dataset("shapes/train")[0]
    >>> sample.image.name, sample.captions[0]
    ('000000.png', 'a triangle at the top in blue of little size , a triangle of small size in orange on ...')
    >>> sample.attributes["objects"][0]
    {'shape': 'triangle', 'colour': 'blue', 'size': 'small', 'position': 'top', 'x': 31.75..., 'y': 13.26...}
    """
    check_count("n (--n)", n, 1)
    check_count("seed (--seed)", seed, 0)
    check_count("n_captions", n_captions, 1)
    if split not in ("train", "val", "test"):
        raise MMConceptsError(f"unknown split {split!r}: choose train, val or test")
    with OutputFolder(out) as tmp:
        (tmp / "images").mkdir()
        rng = random.Random(f"shapesworld-{seed}-{split}")
        with open(tmp / "captions.jsonl", "w", encoding="utf-8") as f:
            for i in range(n):
                scene = sample_scene(rng)
                name = f"images/{i:06d}.png"
                render(scene).save(tmp / name)
                captions = [caption(scene, rng) for _ in range(n_captions)]
                row = {"image": name, "captions": captions, "attributes": scene.attributes(), "split": split}
                f.write(json.dumps(row) + "\n")
    return Path(out)
