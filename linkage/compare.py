"""Pure comparators for the fields record linkage compares: names, dates, postcodes, NHS numbers.

Each ``compare_*`` function returns the name of the agreement level two values reach, best first
(:mod:`linkage.model` turns levels into match weights), or ``None`` when either value is missing
(a missing value is no evidence either way: Fellegi–Sunter's null level).
"""
from __future__ import annotations

import datetime as dt
import re
import unicodedata
from functools import lru_cache

# -- names --------------------------------------------------------------------------------------------

_NOT_LETTERS = re.compile(r"[^a-z ]+")
_SPACES = re.compile(r"\s+")


@lru_cache(maxsize=65536)
def normalise_name(value: str) -> str:
    """Lower-case ASCII letters and single spaces: accents dropped (Wiśniewski → wisniewski),
    apostrophes and dots removed (O'Brien → obrien), hyphens become spaces (Smith-Jones → smith jones)."""
    text = unicodedata.normalize("NFKD", value.replace("ł", "l").replace("Ł", "L"))
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = text.replace("-", " ").replace("'", "").replace("\u2019", "").replace(".", "")
    return _SPACES.sub(" ", _NOT_LETTERS.sub("", text)).strip()


def name_key(value: str) -> str:
    """The name with no spaces at all (``o brien`` = ``obrien``): the form compared for equality."""
    return normalise_name(value).replace(" ", "")


# Known-as forms and spelling variants of given names (each group is one name). A general table of
# English diminutives and common transliterations, not a list of the synthetic generator's names.
_NAME_GROUPS: tuple[str, ...] = (
    # English diminutives
    "elizabeth liz lizzie lizzy beth betty bet libby eliza elsie bess bessie lisa",
    "katherine catherine kathryn katharine kate katie kath cath cathy kathy kat kay kit",
    "rebecca becky becca bex", "abigail abbie abby abi gail", "victoria vicky vicki tori vic",
    "samantha sam sammy sammie", "jennifer jen jenny jenna", "jessica jess jessie jessy",
    "charlotte charlie lottie lotte", "isabella isabel isobel isabelle bella izzy issy belle",
    "amelia millie milly amy emmy", "olivia liv livvy livia", "margaret maggie meg peggy maisie madge",
    "eleanor ellie nell nellie elly elenor elinor", "matilda tilly tilda mattie",
    "natalie nat tally", "nicola nicky nikki", "michelle shell chelle", "gemma gem",
    "bethany beth", "kayleigh kayley kaylee kay", "alexandra alex lexi sasha sandra",
    "caroline carol carrie", "christine christina chris tina kirsty kirsten", "deborah debbie deb",
    "dorothy dot dotty", "florence flo florrie", "frances fran frankie", "gabriella gabby gabi",
    "harriet hattie", "helen nell", "jacqueline jackie jacqui", "josephine jo josie",
    "louise lou lulu", "madeleine madeline maddie maddy", "patricia pat patty trish tricia",
    "penelope penny", "rosemary rosie", "susan sue susie suzy", "teresa theresa tess tessa",
    "valerie val", "veronica ronnie", "wilhelmina mina", "zoe zoey",
    "william will willy billy bill liam", "robert rob robbie bobby bob bert",
    "thomas tom tommy", "james jamie jim jimmy jem", "alexander alex xander sandy alec lex",
    "samuel sam sammy", "benjamin ben benji benny", "joseph joe joey jo", "daniel dan danny",
    "michael mike mikey mick micky", "christopher chris kit topher", "matthew matt matty",
    "nicholas nick nicky nico", "jonathan jon jonny john", "john jack johnny",
    "anthony tony ant", "edward ed eddie ted teddy ned", "frederick freddie fred freddy",
    "theodore theo teddy ted", "joshua josh", "oliver ollie olly", "henry harry hal hank",
    "andrew andy drew", "richard rich richie ricky dick", "stephen steven steve stevie",
    "callum cal", "nathaniel nathan nate nat", "nathan nate", "emmanuel manny manuel",
    "archibald archie", "arthur art artie", "charles charlie chas chuck", "david dave davey",
    "dominic dom", "francis frank frankie", "gregory greg", "jacob jake jakub jakob",
    "kenneth ken kenny", "lawrence laurence larry laurie", "leonard leo len lenny",
    "patrick pat paddy", "peter pete", "philip phillip phil", "raymond ray", "ronald ron ronnie",
    "timothy tim timmy", "vincent vince vinny", "zachary zach zak zack",
    "zakariya zakaria zakariyya zak", "ibrahim ibby ebrahim", "isaac ike zac",
    # transliterations and spellings
    "mohammed muhammad mohammad mohamed muhammed mohamad mohammod mo", "aisha ayesha aysha aishah",
    "fatima fatema fatimah", "yusuf yousuf yousef yosef youssef", "zainab zaynab zeinab",
    "ahmed ahmad ahmet", "hassan hasan", "hussain hussein husain hossain", "abdullahi abdullah abdi",
    "abdirahman abdulrahman abdi", "sean shaun shawn", "aidan aiden ayden", "jayden jaden jaiden",
    "niamh neve neave", "siobhan shivaun chevonne", "aoife eva", "leanne lianne", "sophia sofia sophie",
    "freya freyja", "lewis louis", "jermaine germaine", "tyrese tyreese", "shanice shaniece",
    "katarzyna kasia kate", "malgorzata gosia", "magdalena magda", "wojciech wojtek",
    "aleksander aleksandr oleksandr olek sasha alexander", "aleksandra ola alexandra", "anastasia nastya",
    "oluwaseun seun", "oluwatobi tobi", "adebayo bayo", "chukwuemeka emeka", "oluwadamilare dami",
    "oluwakemi kemi", "funmilayo funmi", "temitope tope", "chiamaka amaka", "babatunde tunde",
    "tafadzwa taffy", "michal michael", "lukasz lucas luke", "pawel paul",
)


def _name_groups() -> dict[str, frozenset[int]]:
    groups: dict[str, set[int]] = {}
    for number, line in enumerate(_NAME_GROUPS):
        for name in line.split():
            groups.setdefault(name, set()).add(number)
    return {name: frozenset(ids) for name, ids in groups.items()}


NAME_GROUPS: dict[str, frozenset[int]] = _name_groups()


def name_variants(value: str) -> set[str]:
    """Every spelling of ``value`` the table knows (itself included), normalised."""
    key = name_key(value)
    out = {key}
    for number in NAME_GROUPS.get(key, ()):
        out.update(_NAME_GROUPS[number].split())
    return out


def names_equivalent(a: str, b: str) -> bool:
    """Nickname, diminutive or spelling variant of one name (Liz ~ Elizabeth, Muhammad ~ Mohammed)."""
    ka, kb = name_key(a), name_key(b)
    return ka == kb or bool(NAME_GROUPS.get(ka, frozenset()) & NAME_GROUPS.get(kb, frozenset()))


def jaro_winkler(a: str, b: str, prefix_scale: float = 0.1) -> float:
    """Jaro–Winkler similarity in [0, 1] (Winkler 1990), with the usual 4-character prefix bonus."""
    if a == b:
        return 1.0
    la, lb = len(a), len(b)
    if not la or not lb:
        return 0.0
    window = max(max(la, lb) // 2 - 1, 0)
    a_flags = [False] * la
    b_flags = [False] * lb
    matches = 0
    for i, ch in enumerate(a):
        lo, hi = max(0, i - window), min(lb, i + window + 1)
        for j in range(lo, hi):
            if not b_flags[j] and b[j] == ch:
                a_flags[i] = b_flags[j] = True
                matches += 1
                break
    if not matches:
        return 0.0
    transpositions = 0
    j = 0
    for i in range(la):
        if a_flags[i]:
            while not b_flags[j]:
                j += 1
            if a[i] != b[j]:
                transpositions += 1
            j += 1
    m = float(matches)
    jaro = (m / la + m / lb + (m - transpositions / 2) / m) / 3
    prefix = 0
    for ca, cb in zip(a[:4], b[:4]):
        if ca != cb:
            break
        prefix += 1
    return jaro + prefix * prefix_scale * (1 - jaro)


_SOUNDEX = {**dict.fromkeys("bfpv", "1"), **dict.fromkeys("cgjkqsxz", "2"), **dict.fromkeys("dt", "3"),
            "l": "4", **dict.fromkeys("mn", "5"), "r": "6"}


def soundex(value: str) -> str:
    """American Soundex (letter + 3 digits; h and w do not separate equal codes)."""
    key = name_key(value)
    if not key:
        return ""
    out = key[0].upper()
    last = _SOUNDEX.get(key[0], "")
    for ch in key[1:]:
        code = _SOUNDEX.get(ch, "")
        if code and code != last:
            out += code
            if len(out) == 4:
                break
        if ch not in "hw":
            last = code
    return out.ljust(4, "0")


@lru_cache(maxsize=8192)
def keying_slips(value: str) -> frozenset[str]:
    """What ``value`` (a name key) reads as with one keying slip undone: two adjacent letters swapped
    back (Xni → Xin) or a doubled letter typed once (Dannyy → Danny). Only these two: a dropped or a
    replaced letter turns one real name into another (Mira → Mia, Eva → Ava). A swap or a doubling does
    so too, and often: Amy ~ May, Kai ~ Kia, Nina ~ Inna, Lisa ~ Ilsa, Ela ~ Lea, Arya ~ Raya — names
    twins can bear. So a slip raises the match probability (it sends the pair to review) but never
    corroborates a link on its own (:func:`forename_slip`, ``linkage.model.corroborated``).
    Jaro–Winkler misses both slips in a name of three or four letters (its match window is a letter
    or none)."""
    out = set()
    for i in range(len(value) - 1):
        if value[i] != value[i + 1]:
            out.add(value[:i] + value[i + 1] + value[i] + value[i + 2:])
        else:
            out.add(value[:i] + value[i + 1:])
    out.discard(value)
    return frozenset(out)


def _slip_of_variant(a: str, b: str) -> bool:
    """Whether name key ``a`` with one keying slip undone is a nickname or variant of ``b``."""
    groups = NAME_GROUPS.get(b)
    return bool(groups) and len(a) >= 3 and any(groups & NAME_GROUPS.get(x, frozenset()) for x in keying_slips(a))


def compare_forenames(a: list[str], b: list[str], *, slips: bool = True) -> str | None:
    """Given names: ``exact`` (first names equal), ``equivalent`` (nickname or spelling variant, or the
    first name of one is another given name of the other), ``close`` (Jaro–Winkler ≥ 0.92, or one
    swapped or doubled letter of three or more (:func:`keying_slips`): a typo), ``similar`` (≥ 0.80,
    or one first name is a 3+ letter part of the other: Dami ~ Oluwadamilare, or a typo of a nickname:
    Pegggy ~ Margaret), ``initial`` (only the initial agrees), else ``different``. With
    ``slips=False`` the keying-slip rules are left out."""
    if not a or not b:
        return None
    fa, fb = name_key(a[0]), name_key(b[0])
    if not fa or not fb:
        return None
    if fa == fb:
        return "exact"
    if names_equivalent(fa, fb) or any(names_equivalent(x, y) for x in a for y in b):
        return "equivalent"
    score = jaro_winkler(fa, fb)
    if score >= 0.92 or (slips and min(len(fa), len(fb)) >= 3
                         and (fa in keying_slips(fb) or fb in keying_slips(fa))):
        return "close"
    short, long_ = sorted((fa, fb), key=len)
    if (score >= 0.80 or (len(short) >= 3 and short in long_)
            or (slips and (_slip_of_variant(fa, fb) or _slip_of_variant(fb, fa)))):
        return "similar"
    if len(fa) == 1 or len(fb) == 1:
        return "initial" if fa[0] == fb[0] else "different"
    return "different"


def forename_slip(a: list[str], b: list[str], level: str | None) -> bool:
    """Whether the forename ``level`` (from :func:`compare_forenames`) owes its agreement to a keying
    slip alone: without the slip rules it would be lower. Amy ~ May, Kai ~ Kia, Amelia ~ May (May →
    Amy, a nickname of Amelia) are such pairs, and each is also two real names."""
    if level not in ("close", "similar"):
        return False
    return compare_forenames(a, b, slips=False) != level


def compare_surnames(a: str | None, b: str | None) -> str | None:
    """Family names: ``exact``, ``close`` (Jaro–Winkler ≥ 0.92 or a spelling variant), ``part`` (one is
    a part of a double-barrelled other: Smith ~ Smith-Jones), ``similar`` (≥ 0.80), else ``different``."""
    if not a or not b:
        return None
    ka, kb = name_key(a), name_key(b)
    if not ka or not kb:
        return None
    if ka == kb:
        return "exact"
    if jaro_winkler(ka, kb) >= 0.92 or names_equivalent(ka, kb):
        return "close"
    pa, pb = set(normalise_name(a).split()), set(normalise_name(b).split())
    if pa & pb:
        return "part"
    if jaro_winkler(ka, kb) >= 0.80:
        return "similar"
    return "different"


# -- dates ----------------------------------------------------------------------------------------------

def parse_date(value: str | None) -> dt.date | None:
    if not value or len(value) < 10:
        return None
    try:
        return dt.date.fromisoformat(value[:10])
    except ValueError:
        return None


def swapped(day: dt.date) -> dt.date | None:
    """The date with day and month exchanged, where that is another valid date (3/4 ↔ 4/3)."""
    if day.day > 12 or day.day == day.month:
        return None
    try:
        return dt.date(day.year, day.day, day.month)
    except ValueError:
        return None


def compare_dates(a: dt.date | None, b: dt.date | None) -> str | None:
    """Dates of birth: ``exact``; ``transposed`` (day and month exchanged); ``near`` (one day apart, the
    same day and month one year apart, or one digit different); ``year`` (same year); else ``different``."""
    if a is None or b is None:
        return None
    if a == b:
        return "exact"
    if swapped(a) == b:
        return "transposed"
    if abs((a - b).days) == 1 or (a.month == b.month and a.day == b.day and abs(a.year - b.year) == 1):
        return "near"
    sa, sb = a.isoformat(), b.isoformat()
    if sum(x != y for x, y in zip(sa, sb)) == 1:
        return "near"
    if a.year == b.year:
        return "year"
    return "different"


# -- postcodes ------------------------------------------------------------------------------------------

_POSTCODE = re.compile(r"^([A-Z]{1,2}[0-9][A-Z0-9]?)\s*([0-9][A-Z]{2})$")


def normalise_postcode(value: str | None) -> str | None:
    """``m40 6wp`` → ``M40 6WP``; None for anything that is not a UK postcode."""
    if not value:
        return None
    match = _POSTCODE.match(value.strip().upper().replace("  ", " "))
    return f"{match.group(1)} {match.group(2)}" if match else None


def compare_postcodes(a: str | None, b: str | None) -> str | None:
    """Postcodes: ``exact``; ``near`` (one character keyed wrongly: M40 6WP ~ M40 7WP, the commonest
    postcode error); ``sector`` (outward code and inward digit: M40 6); ``district`` (outward code:
    M40); else ``different``."""
    if not a or not b:
        return None
    if a == b:
        return "exact"
    if len(a) == len(b) and a.find(" ") == b.find(" ") and sum(x != y for x, y in zip(a, b)) == 1:
        return "near"
    oa, _, ia = a.partition(" ")
    ob, _, ib = b.partition(" ")
    if oa != ob:
        return "different"
    return "sector" if ia[:1] == ib[:1] else "district"


# -- identifiers ----------------------------------------------------------------------------------------

def compare_nhs_numbers(a: str | None, b: str | None, *, a_valid: bool, b_valid: bool) -> str | None:
    """NHS numbers: ``exact`` (equal and modulus-11 valid); ``conflict`` (both valid, different: two
    different people, whatever else agrees); ``near`` (one invalid and one digit or one transposition
    apart: a typo); else ``different``."""
    if not a or not b:
        return None
    if a == b:
        return "exact" if a_valid else "near"
    if a_valid and b_valid:
        return "conflict"
    if len(a) == len(b):
        diff = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
        if len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1
                              and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]):
            return "near"
    return "different"
