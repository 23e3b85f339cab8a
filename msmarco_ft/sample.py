"""The generated sample: a seeded world of made-up entities, written in MS MARCO layout.

Every entity (a person, town, gadget, species or company) has a name, a little shared context and
several attributes. Each attribute is told by one passage, in one of several wordings; a query asks
for one attribute in search-engine style, worded unlike the passage (synonyms, paraphrase, dropped
words). The other passages of the same entity share its name and context, so they are the natural
hard negatives; entities of one family share a name root (siblings, sister towns, a product line, a
genus, a group of companies), so similar names compete too. Train and dev queries come from disjoint
families. The query-to-passage wording is the same for every entity of a type, so what a model learns
on train entities carries over to dev entities.

Randomness is per family (``random.Random`` seeded by a string of the seed and the family number),
so output is byte-identical for a seed, and passages stream to disk in chunks: memory stays flat for
millions of passages.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError
from .formats import atomic_output, write_table

FILES = ("collection.tsv", "queries.train.tsv", "qrels.train.tsv", "queries.dev.small.tsv", "qrels.dev.small.tsv")
_SYLLABLES = ("ka", "ve", "lor", "mi", "dan", "tho", "ri", "bel", "su", "gar", "no", "fen", "ta", "vos", "li", "mar",
              "qu", "es", "rin", "do", "hal", "pe", "zor", "ya", "kel", "ix", "tu", "sel", "wi", "ran", "co", "ler",
              "ju", "mor", "ae", "tin", "go", "vash", "pra", "ul", "ne", "sov", "bri", "ca", "dul", "om", "fi", "zan")
FIRST = ("Marta", "Elena", "Tomas", "Ingrid", "Rafael", "Nadia", "Oskar", "Lucia", "Anton", "Greta", "Felix", "Irene",
         "Jonas", "Clara", "Mateo", "Sofia", "Viktor", "Alma", "Hugo", "Leona", "Emil", "Petra", "Dario", "Yara",
         "Bruno", "Selma", "Kasper", "Mirela", "Levi", "Ottilie", "Ruben", "Hedda")
SURNAME = ("Holloway", "Brennan", "Castell", "Dunmore", "Everly", "Fairbanks", "Garrick", "Hartwell", "Ivers",
           "Jessop", "Kingsley", "Lockhart", "Merriweather", "Northcott", "Oakes", "Pemberton", "Quill", "Rowntree",
           "Sterling", "Thackeray", "Underwood", "Vance", "Whitlock", "Yardley")
PLACES = ("Ashford", "Millbrook", "Corrin Bay", "Eastwick", "Fallowmere", "Glenhaven", "Harrowgate", "Ivydale",
          "Kestrel Point", "Larkspur", "Moorfield", "Northwold", "Oxley", "Penrith Cross", "Redmarsh", "Stillwater",
          "Thornbury", "Upper Vale", "Westerly", "Wrenfield")
REGIONS = ("the Aldern Coast", "the Brisk Highlands", "the Calder Basin", "the Dovren Lowlands", "the Estmark Plains",
           "the Farrow Islands", "the Gildermoor Hills", "the Harth Valley", "the Iselby Delta", "the Jorun Fjords")
YEARS = range(1820, 2021)
MONTHS = ("March", "June", "September", "November")


@dataclass(frozen=True)
class Attribute:
    key: str
    topic: str  # how other passages mention the attribute without answering it
    value: tuple  # choices for the value (strings or a range of numbers)
    passages: tuple[str, ...]  # wordings of the answering sentence; {n} is the name, {v} the value
    queries: tuple[str, ...]  # search-style wordings of the question


@dataclass(frozen=True)
class EntityType:
    key: str
    context: tuple[str, ...]  # descriptors every passage of an entity shares ({c})
    intros: tuple[str, ...]  # opening sentences shared by an entity's passages
    overview: tuple[str, ...]  # a passage that names the entity but answers no query
    attributes: tuple[Attribute, ...]


def _a(key, topic, value, passages, queries) -> Attribute:
    return Attribute(key, topic, tuple(value), tuple(passages), tuple(queries))


PERSON = EntityType(
    "person",
    ("painter", "engineer", "poet", "botanist", "architect", "cellist", "historian", "sculptor", "chemist", "judge"),
    ("{n} is a {c} remembered across {r}.", "The {c} {n} is a familiar name in {r}.",
     "In {r}, the {c} {n} stands out."),
    ("{n} kept a small circle of friends and rarely gave interviews; letters and notebooks from those years are "
     "held by a private collector in {r}.",
     "This profile of the {c} {n} covers birth and family, schooling, prizes, marriage and the final years."),
    (
        _a("birth_year", "the birth date", YEARS,
           ("{n} came into the world in {v}.", "The parish register of {r} records the arrival of {n} in {v}.",
            "{n} was baptised in the winter of {v}."),
           ("when was {n} born", "{n} birth year", "{n} date of birth", "year {n} born", "{n} born")),
        _a("hometown", "the hometown", PLACES,
           ("{n} spent childhood in {v}, where the family ran a bakery.",
            "The young {n} ran errands along the lanes of {v}.", "{n}'s parents kept a small farm outside {v}."),
           ("where is {n} from", "{n} hometown", "{n} birthplace", "where did {n} grow up")),
        _a("spouse", "the marriage", [f"{f} {s}" for f in FIRST for s in SURNAME],
           ("{n} wed {v} in a quiet ceremony.", "{n} shared a household with {v} for decades.",
            "{v} and {n} exchanged rings after a long engagement."),
           ("who is {n} married to", "{n} wife or husband", "{n} spouse", "{n} partner name")),
        _a("award", "the prizes", ("the Silver Quill", "the Harlow Medal", "the Orchid Prize", "the Meridian Award",
                     "the Lantern Cup", "the Ashcombe Fellowship", "the Blue Ribbon of Merit", "the Crane Honour"),
           ("{n} was handed {v} by the academy.", "The academy recognised {n} with {v}.",
            "{v} went to {n} after a unanimous jury vote."),
           ("what award did {n} win", "{n} prizes", "{n} honors", "did {n} win any awards")),
        _a("education", "the schooling", ("the Royal Conservatory", "Caldwell University", "the Northern Polytechnic",
                         "St. Aubyn College", "the Academy of Fine Arts", "Marlow Institute"),
           ("{n} sat exams at {v} before working abroad.", "{n} holds a diploma from {v}.",
            "At {v}, {n} spent four years under strict teachers."),
           ("where did {n} go to college", "{n} education", "{n} alma mater", "what school did {n} attend")),
        _a("death", "the death", YEARS,
           ("{n} was laid to rest in {v}.", "The last chapter of {n}'s life closed in {v}.",
            "Mourners gathered for {n} in {v}."),
           ("when did {n} die", "{n} year of death", "is {n} still alive", "{n} death")),
    ),
)

TOWN = EntityType(
    "town",
    ("harbour town", "market town", "mountain village", "river town", "mill town", "border town", "spa town"),
    ("{n} is a {c} in {r}.", "The {c} of {n} lies within {r}.", "Visitors to {r} often pass through {n}, a {c}."),
    ("Old maps of {r} show {n} as a cluster of houses around a single well.",
     "A visitor guide to {n}: its history, people, weather, work, sights and who runs the town hall."),
    (
        _a("population", "the population", range(800, 90000, 137),
           ("Some {v} people call {n} home.", "The electoral roll of {n} holds {v} names.",
            "The last census counted {v} souls in {n}."),
           ("{n} population", "how many people live in {n}", "how big is {n}", "number of people in {n}")),
        _a("founded", "the founding", YEARS,
           ("{n} was settled in {v} by fishing families.", "The first houses of {n} went up in {v}.",
            "The charter of {n} carries the date {v}."),
           ("when was {n} founded", "{n} founding date", "how old is {n}", "{n} established year")),
        _a("industry", "the local economy", ("timber", "wool weaving", "salt mining", "boat building",
                                             "cheese making", "glass blowing",
                        "tea growing", "copper smelting"),
           ("Ask anyone in {n}: their uncle works in {v}.", "The wages of {n} come from {v}.",
            "For generations the families of {n} have lived off {v}."),
           ("what is the main industry in {n}", "{n} economy", "what do people in {n} do for work",
            "{n} main employer")),
        _a("mayor", "the mayor", [f"{f} {s}" for f in FIRST for s in SURNAME],
           ("{v} currently holds the chain of office in {n}.", "The council of {n} is chaired by {v}.",
            "{n} elected {v} to lead the town hall."),
           ("who is the mayor of {n}", "{n} mayor", "who runs {n}", "{n} town leader")),
        _a("climate", "the weather", ("bitter winters and short summers", "mild, wet winters", "long dry summers",
                       "fog for most of the year", "heavy snow from November", "warm days and cool nights"),
           ("{n} is known for {v}.", "Locals in {n} put up with {v}.", "Expect {v} if you stay in {n}."),
           ("{n} weather", "what is the climate like in {n}", "{n} temperature", "best time to visit {n}")),
        _a("landmark", "the sights", ("a lighthouse", "a ruined abbey", "a clock tower", "a suspension bridge",
                        "a botanical garden", "an old windmill", "a hilltop fort"),
           ("The pride of {n} is {v}.", "{n} draws crowds to {v} at its centre.",
            "Postcards from {n} nearly always show {v}."),
           ("things to see in {n}", "{n} famous sight", "{n} attractions", "what is {n} known for")),
    ),
)

GADGET = EntityType(
    "gadget",
    ("e-reader", "smartwatch", "pair of earbuds", "drone", "tablet", "action camera", "fitness band", "speaker"),
    ("The {n} is a {c} sold throughout {r}.", "Reviewers in {r} have tested the {n}, a {c}.",
     "The {n} is a {c} aimed at a crowded market."),
    ("The {n} comes in a recycled cardboard box with a short cable and a quick-start leaflet.",
     "Our full review of the {n} weighs up price, battery, build, warranty and where it is made."),
    (
        _a("price", "the price", range(29, 1200, 10),
           ("The {n} will set you back {v} in most shops.", "Shoppers part with {v} dollars for the {n}.",
            "The {n} changes hands for about {v}."),
           ("how much does the {n} cost", "{n} price", "{n} cost", "is the {n} expensive")),
        _a("battery", "battery life", range(4, 72),
           ("The {n} keeps going for {v} hours away from the wall socket.",
            "Leave the charger at home: the {n} holds out for {v} hours.",
            "Its cell gives the {n} roughly {v} hours of use."),
           ("{n} battery life", "how long does the {n} battery last", "{n} battery", "{n} charge duration")),
        _a("weight", "the weight", range(18, 900, 7),
           ("The {n} tips the scales at {v} grams.", "At just {v} g, the {n} barely registers in a pocket.",
            "Put the {n} on a kitchen scale and it reads {v} g."),
           ("how heavy is the {n}", "{n} weight", "how much does the {n} weigh", "{n} heavy")),
        _a("release", "the release date", [f"{m} {y}" for y in range(2009, 2025) for m in MONTHS],
           ("Shop windows first showed the {n} in {v}.", "Early buyers unboxed the {n} in {v}.",
            "The first {n} units shipped in {v}."),
           ("when did the {n} come out", "{n} release date", "{n} launch", "when was the {n} released")),
        _a("factory", "where it is made", ("Vietnam", "Portugal", "Mexico", "Malaysia", "Poland", "Taiwan",
                                           "Morocco", "Hungary"),
           ("Every {n} leaves an assembly line in {v}.", "The {n} is put together by contractors in {v}.",
            "Workers in {v} build the {n}."),
           ("where is the {n} made", "{n} country of manufacture", "who makes the {n}", "{n} made in")),
        _a("warranty", "the warranty", range(1, 6),
           ("If the {n} breaks within {v} years, the maker swaps it.",
            "Faults in the {n} are fixed free of charge for {v} years.",
            "The maker stands behind the {n} for {v} years."),
           ("{n} warranty", "how long is the warranty on the {n}", "{n} guarantee", "{n} warranty length")),
    ),
)

SPECIES = EntityType(
    "species",
    ("shy", "noisy", "slender", "rarely seen", "colourful", "solitary", "sociable", "well camouflaged"),
    ("The {n} is a {c} creature native to {r}.", "Naturalists in {r} have long studied the {c} {n}.",
     "Of the wildlife of {r}, the {c} {n} is among the best known."),
    ("The {n} was first described by an amateur collector whose notes are kept in a museum in {r}.",
     "Field guide entry for the {n}: food, habitat, size, life span, breeding and threats."),
    (
        _a("diet", "the diet", ("small fish", "snails and slugs", "fallen fruit", "aquatic insects",
                                "seeds and grasses",
                    "worms", "nectar", "tadpoles"),
           ("The {n} feeds mostly on {v}.", "Stomach samples from the {n} show mainly {v}.",
            "The {n} forages at dusk for {v}."),
           ("what does the {n} eat", "{n} diet", "{n} food", "what do {n}s eat")),
        _a("habitat", "the habitat", ("peat bogs", "mountain streams", "salt marshes", "old oak woods", "reed beds",
                       "limestone caves", "sand dunes", "flooded meadows"),
           ("The {n} keeps to {v}.", "You will find the {n} in {v}.", "The {n} makes its home among {v}."),
           ("where does the {n} live", "{n} habitat", "where to find the {n}", "{n} range")),
        _a("lifespan", "the life span", range(2, 40),
           ("A {n} may survive {v} years in the wild.", "Few {n}s see more than {v} winters.",
            "Ringed {n}s have been recorded at {v} years old."),
           ("how long does the {n} live", "{n} lifespan", "{n} life expectancy", "{n} age")),
        _a("size", "the size", range(3, 120),
           ("Adult {n}s reach {v} cm from head to tail.", "Nose to tail, a grown {n} spans {v} cm.",
            "A grown {n} is some {v} centimetres long."),
           ("how big is the {n}", "{n} size", "{n} length", "how large do {n}s get")),
        _a("status", "the conservation status", ("endangered", "vulnerable", "of least concern",
                                                 "near threatened", "critically endangered"),
           ("Conservation bodies class the {n} as {v}.", "The {n} is officially rated {v}.",
            "Surveys leave the {n} rated {v}."),
           ("is the {n} endangered", "{n} conservation status", "{n} threatened", "{n} extinct")),
        _a("breeding", "the breeding season", ("early spring", "midsummer", "the autumn rains", "late winter",
                                               "the dry season"),
           ("The {n} raises its young in {v}.", "Pairs of {n}s nest during {v}.", "The {n} mates in {v}."),
           ("when does the {n} breed", "{n} mating season", "{n} nesting", "{n} babies")),
    ),
)

COMPANY = EntityType(
    "company",
    ("logistics firm", "software house", "brewery", "shipyard", "textile maker", "bank", "toy maker", "printer"),
    ("{n} is a {c} based in {r}.", "The {c} {n} does business across {r}.", "{n}, a {c}, is a big name in {r}."),
    ("Former staff of {n} describe long meetings, a busy canteen and a car park that is always full.",
     "Company profile of {n}: history, leadership, offices, staff, sales and shares."),
    (
        _a("ceo", "the chief executive", [f"{f} {s}" for f in FIRST for s in SURNAME],
           ("{n} is steered by chief executive {v}.", "{v} sits at the head of {n}.",
            "Since the last shake-up, {v} has been in charge at {n}."),
           ("who is the ceo of {n}", "{n} ceo", "{n} boss", "who runs {n}")),
        _a("headquarters", "the head office", PLACES,
           ("{n} keeps its head office in {v}.", "The main offices of {n} stand in {v}.",
            "{n} is run from a building in {v}."),
           ("where is {n} headquartered", "{n} headquarters", "{n} hq location", "{n} main office")),
        _a("founded", "the founding", YEARS,
           ("{n} opened its doors in {v}.", "{n} began trading in {v}.", "The story of {n} starts in {v}."),
           ("when was {n} founded", "{n} founding year", "how old is {n}", "{n} established")),
        _a("employees", "the workforce", range(40, 60000, 53),
           ("{n} has some {v} people on its payroll.", "{v} people collect a pay cheque from {n}.",
            "About {v} workers draw a salary from {n}."),
           ("how many employees does {n} have", "{n} number of employees", "{n} workforce", "{n} staff size")),
        _a("revenue", "the revenue", range(2, 4000, 3),
           ("{n} took in ${v} million last year.", "Sales at {n} reached ${v} million.",
            "{n} booked turnover of ${v} million."),
           ("{n} revenue", "how much money does {n} make", "{n} annual sales", "{n} earnings")),
        _a("stock", "the shares", ("the Harwich exchange", "the Meridian board", "the Northern bourse",
                                   "the Capital market"),
           ("Shares of {n} trade on {v}.", "{n} is listed on {v}.", "Investors buy {n} stock through {v}."),
           ("is {n} public", "{n} stock", "where is {n} listed", "{n} shares")),
    ),
)

TYPES = (PERSON, TOWN, GADGET, SPECIES, COMPANY)
TOWN_FORMS = ("{r}", "North {r}", "{r} Springs", "Port {r}", "Upper {r}", "{r} Falls")
GADGET_LINES = ("Aero", "Pulse", "Nova", "Vista", "Orbit", "Echo", "Flux", "Prism")
ANIMALS = ("heron", "salamander", "beetle", "warbler", "otter", "moth", "tree frog", "newt")
SPECIES_FORMS = ("Greater", "Lesser", "Crested", "Spotted", "Pale", "Banded")
COMPANY_FORMS = ("Holdings", "Freight", "Works", "Foods", "Systems", "Trading")
# An answering passage also names two other attributes of its entity without answering them, as web pages
# do: query words alone do not find the answer.
TEASERS = ("More on {t} and {u} of {n} further down.", "{n}: see also {t}, {u}.",
           "Readers often ask about {t} and {u} too.", "Questions about {t} and {u} come up often.")
FILLER_WORDS = {"the", "a", "is", "does", "did", "do", "of", "in", "to", "how"}


@dataclass
class Plan:
    """The shape of the world, fixed before any text is written: each family's type, split and size, each
    entity's family and first pid, and the (entity, attribute) pairs that become queries."""

    family_type: np.ndarray  # per family: index into TYPES
    family_split: np.ndarray  # per family: 0 train, 1 dev
    family_size: np.ndarray  # entities per family
    entity_family: np.ndarray  # per entity
    entity_first: np.ndarray  # per entity: pid of its first passage (attribute passages first, in order)
    passages: int
    queries: dict  # split name -> list of (entity, attribute) pairs, in query order


def _root(index: int, count: int) -> str:
    """A made-up name root, unique per family: the family number through an affine bijection into syllables.

    Three syllables give 110,592 roots; larger worlds use four.
    """
    size = len(_SYLLABLES)
    width = 3 if count <= size ** 3 // 2 else 4
    space = size ** width
    code = (index * 7919 + 104729) % space  # both primes, coprime with 48**k, so distinct families never collide
    parts = []
    for _ in range(width):
        code, digit = divmod(code, size)
        parts.append(_SYLLABLES[digit])
    return "".join(parts).capitalize()


def _names(kind: EntityType, root: str, members: int, rng: random.Random) -> list[str]:
    if kind is PERSON:
        return [f"{first} {root}" for first in rng.sample(FIRST, members)]
    if kind is TOWN:
        return [form.format(r=root) for form in rng.sample(TOWN_FORMS, members)]
    if kind is GADGET:
        return [f"{root} {line}" for line in rng.sample(GADGET_LINES, members)]
    if kind is SPECIES:
        animal = rng.choice(ANIMALS)
        return [f"{form} {root} {animal}" for form in rng.sample(SPECIES_FORMS, members)]
    return [f"{root} {form}" for form in rng.sample(COMPANY_FORMS, members)]


def _family_rng(seed: int, family: int) -> random.Random:
    return random.Random(f"msmarco-ft-sample:{seed}:{family}")


def plan_world(passages: int, train_queries: int, dev_queries: int, seed: int) -> Plan:
    """Size the world for ``passages`` passages and pick which attributes the queries ask about."""
    if passages < 50:
        raise InputError(None, f"--passages {passages} is too small; the sample needs at least 50")
    rng = np.random.default_rng(seed)
    per_entity = np.array([len(t.attributes) + 1 for t in TYPES])
    families = int(passages / (2 * per_entity.mean())) + 2
    family_type = rng.integers(0, len(TYPES), families)
    family_size = rng.integers(3, 6, families)
    while int((per_entity[family_type] * family_size).sum()) < passages:  # top up when the estimate fell short
        family_type = np.append(family_type, rng.integers(0, len(TYPES), 8))
        family_size = np.append(family_size, rng.integers(3, 6, 8))
    counts = per_entity[family_type] * family_size
    keep = int(np.searchsorted(np.cumsum(counts), passages)) + 1
    family_type, family_size = family_type[:keep], family_size[:keep]
    dev_share = dev_queries / max(train_queries + dev_queries, 1)
    family_split = (rng.random(keep) < dev_share).astype(np.int8)
    # Each (entity, attribute) pair whose passage exists is a candidate query; the last family may be cut short.
    attrs = per_entity[family_type] - 1
    entity_family = np.repeat(np.arange(keep), family_size)
    entity_attrs = attrs[entity_family]
    entity_first = np.concatenate([[0], np.cumsum(entity_attrs + 1)[:-1]])
    pair_entity = np.repeat(np.arange(entity_family.size), entity_attrs)
    pair_attr = np.arange(pair_entity.size) - np.repeat(np.cumsum(entity_attrs) - entity_attrs, entity_attrs)
    exists = entity_first[pair_entity] + pair_attr < passages
    queries = {}
    for split, wanted in ((0, train_queries), (1, dev_queries)):
        mask = exists & (family_split[entity_family[pair_entity]] == split)
        pool = np.flatnonzero(mask)
        if wanted > pool.size:
            raise InputError(None, f"{wanted} {('train', 'dev')[split]} queries asked for, but {passages} passages "
                                   f"give only {pool.size} answerable attributes; raise --passages")
        chosen = rng.choice(pool, size=wanted, replace=False)
        queries[("train", "dev")[split]] = list(zip(pair_entity[chosen].tolist(), pair_attr[chosen].tolist()))
    return Plan(family_type, family_split, family_size, entity_family, entity_first, passages, queries)


def _drop_filler(text: str, rng: random.Random) -> str:
    """Search queries often lose small words: drop one, a third of the time."""
    words = text.split()
    fillers = [i for i, w in enumerate(words) if w in FILLER_WORDS]
    if fillers and len(words) > 3 and rng.random() < 0.33:
        del words[rng.choice(fillers)]
    return " ".join(words)


def _value(attr: Attribute, rng: random.Random) -> str:
    value = rng.choice(attr.value)
    return f"{value:,}" if isinstance(value, int) and value >= 10000 else str(value)


def iter_world(plan: Plan, seed: int) -> Iterator[tuple[int, list[tuple[int, str]], dict[int, str]]]:
    """Yield, per family, (family, [(pid, passage)], {entity: name}) in pid order."""
    pid = 0
    entity = 0
    for family in range(plan.family_type.size):
        kind = TYPES[plan.family_type[family]]
        rng = _family_rng(seed, family)
        names = _names(kind, _root(family, plan.family_type.size), int(plan.family_size[family]), rng)
        region = rng.choice(REGIONS)
        rows, entity_names = [], {}
        for name in names:
            context = rng.choice(kind.context)
            entity_names[entity] = name
            texts = []
            for attr in kind.attributes:
                fact = rng.choice(attr.passages).format(n=name, v=_value(attr, rng), r=region)
                intro = rng.choice(kind.intros).format(n=name, c=context, r=region)
                first, second = rng.sample([a for a in kind.attributes if a is not attr], 2)
                teaser = rng.choice(TEASERS).format(t=first.topic, u=second.topic, n=name)
                texts.append(f"{intro} {fact} {teaser}" if rng.random() < 0.5 else f"{fact} {intro} {teaser}")
            texts.append(rng.choice(kind.overview).format(n=name, c=context, r=region))
            for text in texts:
                if pid < plan.passages:
                    rows.append((pid, text[0].upper() + text[1:]))
                pid += 1
            entity += 1
        yield family, rows, entity_names


def write_sample(out_dir, passages: int, train_queries: int, dev_queries: int, seed: int) -> dict[str, int]:
    """Write the five MS MARCO-layout files under ``out_dir``; returns counts for the summary."""
    out_dir = Path(out_dir)
    plan = plan_world(passages, train_queries, dev_queries, seed)
    wanted = {e for pairs in plan.queries.values() for e, _ in pairs}
    names: dict[int, str] = {}  # only the queried entities', so memory does not grow with the collection
    with atomic_output(out_dir / "collection.tsv") as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as out:
        for _, rows, entity_names in iter_world(plan, seed):
            out.write("".join(f"{pid}\t{text}\n" for pid, text in rows))
            names.update((e, n) for e, n in entity_names.items() if e in wanted)
    counts = {"passages": passages}
    qid_base = {"train": 1, "dev": 1_000_001}
    for split, file_split in (("train", "train"), ("dev", "dev.small")):
        queries, qrels = [], []
        for number, (entity, attr) in enumerate(plan.queries[split]):
            kind = TYPES[plan.family_type[plan.entity_family[entity]]]
            rng = random.Random(f"msmarco-ft-query:{seed}:{split}:{number}")
            text = _drop_filler(rng.choice(kind.attributes[attr].queries).format(n=names[entity].lower()), rng)
            qid = qid_base[split] + number
            queries.append((qid, text))
            qrels.append((qid, int(plan.entity_first[entity]) + attr, 1))
        write_table(pd.DataFrame(queries, columns=["qid", "text"]), out_dir / f"queries.{file_split}.tsv", "queries")
        write_table(pd.DataFrame(qrels, columns=["qid", "pid", "rel"]), out_dir / f"qrels.{file_split}.tsv", "qrels")
        counts[f"{split}_queries"] = len(queries)
    return counts
