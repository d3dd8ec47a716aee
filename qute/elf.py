"""Just enough of ELF32 (little-endian, as arm-none-eabi-gcc writes it) for memory reports and flashing.

Sections (name, type, flags, address, size), program headers (to find where a RAM section's
initial contents are stored) and the symbol table, read with :mod:`struct`; no binutils needed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from qute.errors import QuteError

SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 0x1, 0x2, 0x4
SHT_PROGBITS, SHT_SYMTAB, SHT_NOBITS = 1, 2, 8
PT_LOAD = 1


@dataclass(frozen=True)
class Section:
    name: str
    type: int
    flags: int
    addr: int
    offset: int
    size: int

    @property
    def alloc(self) -> bool:
        return bool(self.flags & SHF_ALLOC)

    @property
    def nobits(self) -> bool:
        return self.type == SHT_NOBITS

    @property
    def readonly(self) -> bool:
        return not self.flags & SHF_WRITE


@dataclass(frozen=True)
class Segment:
    type: int
    offset: int
    vaddr: int
    paddr: int
    filesz: int
    memsz: int


@dataclass(frozen=True)
class Symbol:
    name: str
    value: int
    size: int
    kind: int  # STT_*: 0 none, 1 object, 2 function
    section: str  # name of the section it lives in ("" when none)


class Elf:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.data = self.path.read_bytes()
        except OSError as e:
            raise QuteError(f"cannot read {self.path}: {e.strerror}") from None
        d = self.data
        if len(d) < 52 or d[:4] != b"\x7fELF" or d[4] != 1 or d[5] != 1:
            raise QuteError(f"{self.path} is not a 32-bit little-endian ELF file")
        (self.entry, phoff, shoff) = struct.unpack_from("<III", d, 24)
        (phentsize, phnum, shentsize, shnum, shstrndx) = struct.unpack_from("<HHHHH", d, 42)
        self.segments = [Segment(*struct.unpack_from("<IIIIII", d, phoff + i * phentsize)) for i in range(phnum)]
        raw = [struct.unpack_from("<IIIIII", d, shoff + i * shentsize) for i in range(shnum)]
        strtab = raw[shstrndx] if shnum else None

        def name(table, off):
            start = table[4] + off
            return d[start : d.index(b"\0", start)].decode()

        self.sections = [Section(name(strtab, r[0]), r[1], r[2], r[3], r[4], r[5]) for r in raw]
        self._raw = raw
        self._symbols = None

    def section(self, name: str) -> Section | None:
        return next((s for s in self.sections if s.name == name), None)

    def alloc_sections(self) -> list[Section]:
        return [s for s in self.sections if s.alloc and s.size > 0]

    def load_address(self, s: Section) -> int:
        """Where the section's contents are stored in the image (its LMA): differs from its
        address for .data, which start-up code copies from flash to RAM."""
        for p in self.segments:
            if p.type == PT_LOAD and p.vaddr <= s.addr < p.vaddr + max(p.memsz, 1) and not s.nobits:
                return p.paddr + (s.addr - p.vaddr)
        return s.addr

    def read(self, addr: int, n: int) -> bytes:
        """n bytes of the image at (load) address addr."""
        for p in self.segments:
            if p.type == PT_LOAD and p.paddr <= addr and addr + n <= p.paddr + p.filesz:
                off = p.offset + addr - p.paddr
                return self.data[off : off + n]
        raise QuteError(f"{self.path}: address {addr:#x} is not in the image")

    @property
    def symbols(self) -> list[Symbol]:
        if self._symbols is None:
            self._symbols = []
            for i, r in enumerate(self._raw):
                if r[1] != SHT_SYMTAB:
                    continue
                strtab = self._raw[struct.unpack_from("<I", self.data, self._shdr_offset(i) + 24)[0]]
                for j in range(r[5] // 16):
                    st_name, value, size, info, _other, shndx = struct.unpack_from("<IIIBBH", self.data, r[4] + 16 * j)
                    start = strtab[4] + st_name
                    nm = self.data[start : self.data.index(b"\0", start)].decode(errors="replace")
                    sec = self.sections[shndx].name if 0 < shndx < len(self.sections) else ""
                    self._symbols.append(Symbol(nm, value, size, info & 0xF, sec))
        return self._symbols

    def _shdr_offset(self, i: int) -> int:
        shoff = struct.unpack_from("<I", self.data, 32)[0]
        shentsize = struct.unpack_from("<H", self.data, 46)[0]
        return shoff + i * shentsize

    def symbol(self, name: str) -> Symbol | None:
        return next((s for s in self.symbols if s.name == name), None)
