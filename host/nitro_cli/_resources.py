"""run-enclave's arguments and the simulated parent's resources: numbers, CPUs, memory, CIDs and names.

Facts (aws-nitro-enclaves-cli ``src/common/commands_parser.rs``, ``src/enclave_proc/cpu_info.rs``,
``src/enclave_proc/resource_manager.rs``, ``src/lib.rs`` ``new_enclave_name``):

- Integers are parsed as Rust's ``str::parse`` does: ASCII digits with an optional leading ``+``, within the
  type's range (u32 for CPU ids and counts, u64 for CIDs, memory and timeouts); anything else is E03 with
  the flag's name and the text.
- ``--memory`` is a number with an optional unit ``M``/``m`` (default), ``G``/``g`` or ``T``/``t``.
- ``--enclave-cid``: 0 means "let the driver pick" (a note on stderr), 1 and 2 are well-known, 3 is the
  parent, u32::MAX is VMADDR_CID_ANY and anything above u32::MAX does not fit a vsock CID: all E03.
- The CPU pool is a list like ``1-3,7``; a malformed id is E23, a bad interval E24. ``--cpu-ids`` with a
  repeated id is E20, one outside the pool E21, ``--cpu-count`` over the pool's size E22.
- The default enclave name is the EIF file name without its ``.eif`` suffix(es); a name in use gets
  ``_1``, ``_2``, ... (also for a name the user gave).

Simulation rules (the driver's and the hypervisor's part, documented here):

- The CPU pool is ``$NITRO_SIM_CPU_POOL`` (default :data:`DEFAULT_CPU_POOL`: a parent with 8 vCPUs that keeps
  CPU 0). Hyper-threading siblings are not modelled, so the whole-core rule never bites.
- ``--cpu-count N`` takes the N lowest free CPUs of the pool; a CPU in use by another enclave, or too few
  free CPUs, is the driver's refusal: E29 with its message.
- Memory is handed out in 2 MiB hugepages (the smallest the real allocator uses), from a pool of
  ``$NITRO_SIM_MEMORY_MIB`` (default :data:`DEFAULT_MEMORY_POOL_MIB`); over it is E27. The driver's
  minimum is :data:`MIN_ENCLAVE_MEMORY_MIB` (E29 when starting).
- An automatic CID is the lowest free one from :data:`AUTO_CID_MIN` (the real driver's picks start there
  too); a CID in use by a running enclave is refused when starting (E29).
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections import Counter
from collections.abc import Collection, Mapping, Sequence

from host.nitro_cli.errors import NitroCliError

U32_MAX = 0xFFFF_FFFF
U64_MAX = 0xFFFF_FFFF_FFFF_FFFF
ENV_CPU_POOL = "NITRO_SIM_CPU_POOL"
ENV_MEMORY_POOL = "NITRO_SIM_MEMORY_MIB"
#: The simulated NE CPU pool when ``$NITRO_SIM_CPU_POOL`` is unset.
DEFAULT_CPU_POOL = "1-7"
#: The simulated hugepage memory for enclaves when ``$NITRO_SIM_MEMORY_MIB`` is unset.
DEFAULT_MEMORY_POOL_MIB = 8192
#: At most this many CPUs in a pool (a bound on what an interval like ``1-4000000000`` expands to).
MAX_POOL_CPUS = 1024
#: ``ENCLAVE_MEMORY_EIF_SIZE_RATIO``: an enclave needs at least this many times its EIF's size.
ENCLAVE_MEMORY_EIF_SIZE_RATIO = 4
#: The driver's minimum enclave memory (``NE_ERR_ENCLAVE_MEM_MIN_SIZE``).
MIN_ENCLAVE_MEMORY_MIB = 64
#: Memory is given in hugepages of this size at least.
HUGEPAGE_MIB = 2
#: Automatic CIDs start here.
AUTO_CID_MIN = 16
#: The well-known CIDs (VMADDR_CID_HYPERVISOR 0 is "auto" here, LOCAL 1, HOST 2) and the parent's.
WELL_KNOWN_CIDS = (1, 2)
PARENT_CID = 3

_UNSIGNED = re.compile(r"\+?[0-9]+")


def parse_unsigned(text: str, *, bits: int) -> int | None:
    """``text`` as Rust's ``u32``/``u64`` ``parse`` reads it, or None."""
    if not _UNSIGNED.fullmatch(text) or len(text) > 30:
        return None
    value = int(text)
    return value if value < 1 << bits else None


def parse_number_arg(name: str, text: str, what: str, *, bits: int) -> int:
    """A numeric flag, or E03 naming it (``InvalidArgument`` with ``[name, text]``)."""
    value = parse_unsigned(text, bits=bits)
    if value is None:
        raise NitroCliError("E03", (name, text), subaction=f"`{what}` is not a number")
    return value


_UNITS = {"M": 1, "m": 1, "": 1, "G": 1024, "g": 1024, "T": 1024 * 1024, "t": 1024 * 1024}


def parse_memory(text: str) -> int:
    """``--memory`` in MiB (``parse_memory``): digits, then an optional unit; E03 otherwise."""
    split = next(
        (i for i, ch in enumerate(text) if unicodedata.category(ch) not in ("Nd", "Nl", "No")), len(text)
    )
    number, unit = text[:split], text[split:]
    value = parse_unsigned(number, bits=64) if number.isascii() and number.isdigit() else None
    if value is None:
        raise NitroCliError("E03", ("memory", text), subaction="`memory` argument does not contain a number")
    if unit not in _UNITS or value * _UNITS[unit] > U64_MAX:
        raise NitroCliError(
            "E03", ("memory", text), subaction="`memory` argument does not contain a valid size indicator"
        )
    return value * _UNITS[unit]


def check_cid(cid: int) -> None:
    """The CID rules of ``parse_enclave_cid`` (0 is accepted: auto)."""
    if cid in WELL_KNOWN_CIDS or cid == U32_MAX:
        raise NitroCliError("E03", subaction=f"CID {cid} is a well-known CID, not to be used for enclaves")
    if cid == PARENT_CID:
        raise NitroCliError(
            "E03", subaction=f"CID {cid} is the CID of the parent VM, not to be used for enclaves"
        )
    if cid > U32_MAX:
        raise NitroCliError(
            "E03",
            subaction=f"CID {cid} is higher than the maximum supported (u32 max) for a vsock device",
        )


def cpu_pool(environ: Mapping[str, str] | None = None) -> list[int]:
    """The simulated NE CPU pool (``$NITRO_SIM_CPU_POOL`` or the default), in the order listed."""
    env = os.environ if environ is None else environ
    text = env.get(ENV_CPU_POOL) or DEFAULT_CPU_POOL
    out: list[int] = []
    for interval in text.strip().split(","):
        bounds = interval.split("-")
        if len(bounds) > 2:
            raise NitroCliError("E24", subaction=f"Invalid CPU ID interval ({interval})")
        values = [_cpu_value(bound) for bound in bounds]
        first, last = values[0], values[-1]
        if last - first + 1 + len(out) > MAX_POOL_CPUS:
            raise NitroCliError("E24", subaction=f"The CPU pool is over {MAX_POOL_CPUS} CPUs ({interval})")
        out.extend(range(first, last + 1))
    return out


def _cpu_value(text: str) -> int:
    value = parse_unsigned("".join(text.split()), bits=32)
    if value is None:
        raise NitroCliError("E23", subaction=f"Failed to parse CPU ID: {text.strip()[:40]!r}")
    return value


def check_cpu_config(pool: Sequence[int], cpu_ids: Sequence[int] | None, cpu_count: int | None) -> None:
    """``CpuInfo::get_cpu_config``: the request against the pool as configured (not what is in use)."""
    if cpu_ids is not None:
        counts = Counter(cpu_ids)
        unique = sorted(counts)
        if len(unique) < len(cpu_ids):
            duplicates = "".join(str(c) for c in unique if counts[c] > 1)
            raise NitroCliError(
                "E20",
                ("cpu-ids", duplicates),
                subaction=f"CPU IDs list contains {len(cpu_ids) - len(unique)} duplicate(s)",
            ).add_subaction("Failed to check whether CPU list is valid")
        pool_set = set(pool)
        for cpu in unique:
            if cpu not in pool_set:
                raise NitroCliError(
                    "E21",
                    ("cpu-ids", str(cpu)),
                    subaction=f"The CPU with ID {cpu} is not available in the NE CPU pool",
                ).add_subaction("Failed to check whether CPU list is valid")
    elif cpu_count is not None and len(pool) < cpu_count:
        raise NitroCliError(
            "E22",
            ("cpu-count", str(cpu_count)),
            subaction=f"Insufficient CPUs available (requested {cpu_count}, but maximum is {len(pool)})",
        )


def _vcpu_error(message: str, cpu: int | None) -> NitroCliError:
    err = NitroCliError("E29", subaction=message).add_subaction("Add vCPU ioctl failed")
    if cpu is not None:
        err.add_subaction(f"Failed to add CPU with ID {cpu}")
    return err.add_subaction("vCPUs initialization issue")


def assign_cpus(
    pool: Sequence[int], in_use: Collection[int], cpu_ids: Sequence[int] | None, cpu_count: int | None
) -> list[int]:
    """The CPUs the enclave gets: the listed ones if all free, else the ``cpu_count`` lowest free ones."""
    if cpu_ids is not None:
        for cpu in cpu_ids:
            if cpu in in_use:
                raise _vcpu_error("The provided vCPU is already used", cpu)
        return list(cpu_ids)
    free = sorted(c for c in set(pool) if c not in in_use)
    count = cpu_count or 0
    if len(free) < count:
        raise _vcpu_error("The enclave cannot be created because no CPUs are available in the pool", None)
    if count == 0:
        raise NitroCliError(
            "E29", subaction="The enclave cannot start because no vCPUs have been added"
        ).add_subaction("Start enclave ioctl failed")
    return free[:count]


def memory_pool_mib(environ: Mapping[str, str] | None = None) -> int:
    """The simulated hugepage pool in MiB; raises ValueError on a bad ``$NITRO_SIM_MEMORY_MIB``."""
    env = os.environ if environ is None else environ
    text = env.get(ENV_MEMORY_POOL)
    if not text:
        return DEFAULT_MEMORY_POOL_MIB
    value = parse_unsigned(text, bits=64)
    if value is None:
        raise ValueError(f"{ENV_MEMORY_POOL} must be a number of MiB, got {text[:40]!r}")
    return value


def ceil_div(lhs: int, rhs: int) -> int:
    return -(-lhs // rhs)


def min_memory_mib(eif_size: int) -> int:
    """The least memory an EIF of ``eif_size`` bytes runs in, as the E26 message states it."""
    return ceil_div(ceil_div(eif_size, 1024), 1024) * ENCLAVE_MEMORY_EIF_SIZE_RATIO


def check_memory_for_eif(memory_mib: int, eif_size: int) -> None:
    """``EnclaveHandle::new`` and ``ResourceAllocator::new``: 4x the EIF's size, and not zero (E26)."""
    if ENCLAVE_MEMORY_EIF_SIZE_RATIO * eif_size > memory_mib << 20:
        least = min_memory_mib(eif_size)
        raise NitroCliError(
            "E26",
            ("memory", str(memory_mib), str(least)),
            subaction=f"At least {least} MB must be allocated (which is "
            f"{ENCLAVE_MEMORY_EIF_SIZE_RATIO} times the EIF file size)",
        )
    if memory_mib == 0:
        raise NitroCliError(
            "E26", ("memory", "0"), subaction="Cannot start an enclave with no memory"
        ).add_subaction("Create resource allocator")


def allocate_memory(memory_mib: int, in_use_mib: int, pool_mib: int) -> int:
    """The MiB the enclave gets: rounded up to whole hugepages, from what the pool has left (E27)."""
    allocated = ceil_div(memory_mib, HUGEPAGE_MIB) * HUGEPAGE_MIB
    if allocated > pool_mib - in_use_mib:
        remained = allocated - max(0, pool_mib - in_use_mib)
        raise NitroCliError(
            "E27",
            ("memory", str(memory_mib)),
            subaction=f"Failed to allocate entire memory ({remained} MB remained)",
        ).add_subaction("Failed to allocate enclave memory")
    if allocated < MIN_ENCLAVE_MEMORY_MIB:
        raise NitroCliError(
            "E29", subaction="The enclave's memory size is lower than the minimum supported"
        ).add_subaction("Start enclave ioctl failed")
    return allocated


def assign_cid(requested: int | None, in_use: Collection[int]) -> int:
    """The enclave's CID: the requested one if free, else the lowest free from :data:`AUTO_CID_MIN`."""
    if requested:
        if requested in WELL_KNOWN_CIDS or requested == PARENT_CID or requested >= U32_MAX:
            raise NitroCliError(
                "E29",
                subaction="The provided enclave CID is invalid, being a well-known CID or the parent VM CID",
            ).add_subaction("Start enclave ioctl failed")
        if requested in in_use:
            raise NitroCliError(
                "E29", subaction=f"The provided enclave CID {requested} is already used by another enclave"
            ).add_subaction("Start enclave ioctl failed")
        return requested
    cid = AUTO_CID_MIN
    while cid in in_use:
        cid += 1
    return cid


def new_enclave_name(requested: str | None, eif_path: str, names: Collection[str]) -> str:
    """``new_enclave_name``: the given or default name, with ``_1``, ``_2``... while it is taken."""
    base = requested if requested is not None else eif_path.rsplit("/", maxsplit=1)[-1]
    if requested is None:
        while base.endswith(".eif"):
            base = base[: -len(".eif")]
    name, index = base, 0
    while name in names:
        index += 1
        name = f"{base}_{index}"
    return name
