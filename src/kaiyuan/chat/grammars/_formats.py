"""Grammar trees for the JSON Schema string ``format`` values kaiyuan enforces.

Owns: date, time, date-time (RFC 3339), uuid, email, hostname, ipv4, uri and uri-reference, each as a tree of
*decoded* characters (the caller JSON-encodes). Every tree generates only strings that the strict checkers
accept (jsonschema's FormatChecker with rfc3339-validator/rfc3987 installed); some are subsets (no leap seconds,
no February 29, http(s)-like URIs, dotted-atom e-mail addresses).
Must not know: JSON Schema keywords other than the format names, GBNF spelling, budgets (``part_cap`` bounds the
free-length pieces of e-mail addresses, host names and URIs).
"""

from __future__ import annotations

from collections.abc import Callable

from kaiyuan.chat.grammars import _charset as cs
from kaiyuan.chat.grammars import _ir as ir

D = ir.Chars(cs.DIGIT)
HEX = ir.Chars(cs.normalize([(0x30, 0x39), (0x41, 0x46), (0x61, 0x66)]))
_ALNUM = cs.normalize([(0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A)])
ALNUM = ir.Chars(_ALNUM)
LOWER = ir.Chars(((0x61, 0x7A),))


def _digit(lo: str, hi: str) -> ir.Node:
    return ir.Chars(((ord(lo), ord(hi)),))


def date() -> ir.Node:
    day_28 = ir.alt(
        ir.seq(ir.lit("0"), _digit("1", "9")), ir.seq(ir.lit("1"), D), ir.seq(ir.lit("2"), _digit("0", "8"))
    )
    day_30 = ir.alt(day_28, ir.lit("29"), ir.lit("30"))
    day_31 = ir.alt(day_30, ir.lit("31"))
    months = ir.alt(
        ir.seq(ir.alt(*map(ir.lit, ("01", "03", "05", "07", "08", "10", "12"))), ir.lit("-"), day_31),
        ir.seq(ir.alt(*map(ir.lit, ("04", "06", "09", "11"))), ir.lit("-"), day_30),
        ir.seq(ir.lit("02-"), day_28),
    )
    year = ir.seq(_digit("1", "9"), ir.rep(D, 3, 3))
    return ir.seq(year, ir.lit("-"), months)


def time() -> ir.Node:
    hour = ir.alt(ir.seq(_digit("0", "1"), D), ir.seq(ir.lit("2"), _digit("0", "3")))
    sixty = ir.seq(_digit("0", "5"), D)
    fraction = ir.opt(ir.seq(ir.lit("."), ir.rep(D, 1, 6)))
    offset = ir.alt(ir.lit("Z"), ir.seq(ir.Chars(cs.of_chars("+-")), hour, ir.lit(":"), sixty))
    return ir.seq(hour, ir.lit(":"), sixty, ir.lit(":"), sixty, fraction, offset)


def date_time() -> ir.Node:
    return ir.seq(date(), ir.lit("T"), time())


def uuid() -> ir.Node:
    groups = [ir.rep(HEX, n, n) for n in (8, 4, 4, 4, 12)]
    return ir.seq(groups[0], *(ir.seq(ir.lit("-"), g) for g in groups[1:]))


def ipv4() -> ir.Node:
    octet = ir.alt(
        D,
        ir.seq(_digit("1", "9"), D),
        ir.seq(ir.lit("1"), D, D),
        ir.seq(ir.lit("2"), _digit("0", "4"), D),
        ir.seq(ir.lit("25"), _digit("0", "5")),
    )
    return ir.seq(octet, *(ir.seq(ir.lit("."), octet) for _ in range(3)))


def _label(cap: int) -> ir.Node:
    """A DNS label: letters/digits, inner hyphens, at most 63 characters."""
    inner = min(cap, 61)
    return ir.seq(
        ALNUM, ir.opt(ir.seq(ir.rep(ir.Chars(cs.union(_ALNUM, cs.of_chars("-"))), 0, inner), ALNUM))
    )


def hostname(part_cap: int) -> ir.Node:
    """Up to four labels and a letters-only top-level name: at most 63 + 2 * 64 + 25 = 216 < 253 characters."""
    label = _label(part_cap)
    tld = ir.seq(LOWER, ir.rep(LOWER, 1, min(max(part_cap, 1), 23)))
    return ir.seq(
        label, ir.rep(ir.seq(ir.lit("."), label), 0, max(1, min(part_cap // 8, 2))), ir.lit("."), tld
    )


def email(part_cap: int) -> ir.Node:
    atom_chars = ir.Chars(cs.union(_ALNUM, cs.of_chars("!#$%&'*+/=?^_`{|}~-")))
    atom = ir.rep(atom_chars, 1, max(1, min(part_cap, 64)))
    local = ir.seq(atom, ir.rep(ir.seq(ir.lit("."), atom), 0, 2))
    return ir.seq(local, ir.lit("@"), hostname(part_cap))


_UNRESERVED = cs.union(_ALNUM, cs.of_chars("-._~"))
_SUB_DELIMS = cs.of_chars("!$&'()*+,;=")


def _pchars(extra: str, cap: int) -> ir.Node:
    plain = ir.Chars(cs.union(_UNRESERVED, _SUB_DELIMS, cs.of_chars(extra)))
    percent = ir.seq(ir.lit("%"), HEX, HEX)
    return ir.rep(ir.alt(plain, percent), 0, max(cap, 1))


def _path_query_fragment(cap: int) -> ir.Node:
    path = ir.rep(ir.seq(ir.lit("/"), _pchars(":@", cap)), 0, max(1, min(cap // 4, 8)))
    query = ir.opt(ir.seq(ir.lit("?"), _pchars(":@/?", cap)))
    fragment = ir.opt(ir.seq(ir.lit("#"), _pchars(":@/?", cap)))
    return ir.seq(path, query, fragment)


def uri(part_cap: int) -> ir.Node:
    scheme = ir.seq(LOWER, ir.rep(ir.Chars(cs.union(((0x61, 0x7A),), cs.DIGIT, cs.of_chars("+.-"))), 0, 9))
    port = ir.opt(ir.seq(ir.lit(":"), _port()))
    return ir.seq(scheme, ir.lit("://"), hostname(part_cap), port, _path_query_fragment(part_cap))


def uri_reference(part_cap: int) -> ir.Node:
    relative = ir.seq(ir.rep(ir.seq(_pchars("@", part_cap), ir.lit("/")), 0, 2), _pchars("@", part_cap))
    return ir.alt(uri(part_cap), ir.seq(ir.opt(ir.lit("/")), relative))


def _port() -> ir.Node:
    return ir.seq(_digit("1", "9"), ir.rep(D, 0, 3))


FORMATS: dict[str, Callable[[int], ir.Node]] = {
    "date": lambda cap: date(),
    "time": lambda cap: time(),
    "date-time": lambda cap: date_time(),
    "uuid": lambda cap: uuid(),
    "ipv4": lambda cap: ipv4(),
    "hostname": hostname,
    "email": email,
    "uri": uri,
    "uri-reference": uri_reference,
}
"""Format name -> tree builder taking the cap on free-length parts."""
