"""The texts of nitro-cli's error codes (aws-nitro-enclaves-cli ``src/common/document_errors.rs``).

``ERROR_CODES`` (code -> ``NitroCliErrorEnum`` variant) and ``get_detailed_info``'s templates, kept verbatim
because users and scripts compare them; ``{0}``, ``{1}``, ``{2}`` are the failure's ``additional_info``
items. E19 adds its second line only with two items; E26 has two forms (with the EIF's minimum, or the
"greater than 0 MB" one). :mod:`host.nitro_cli.errors` fills them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

NAMES: Final[Mapping[str, str]] = {
    "E00": "UnspecifiedError",
    "E01": "MissingArgument",
    "E02": "ConflictingArgument",
    "E03": "InvalidArgument",
    "E04": "SocketPairCreationFailure",
    "E05": "ProcessSpawnFailure",
    "E06": "DaemonizeProcessFailure",
    "E07": "ReadFromDiskFailure",
    "E08": "UnusableConnectionError",
    "E09": "SocketCloseError",
    "E10": "SocketConnectTimeoutError",
    "E11": "SocketError",
    "E12": "EpollError",
    "E13": "InotifyError",
    "E14": "InvalidCommand",
    "E15": "LockAcquireFailure",
    "E16": "ThreadJoinFailure",
    "E17": "SerdeError",
    "E18": "FilePermissionsError",
    "E19": "FileOperationFailure",
    "E20": "InvalidCpuConfiguration",
    "E21": "NoSuchCpuAvailableInPool",
    "E22": "InsufficientCpus",
    "E23": "MalformedCpuId",
    "E24": "CpuError",
    "E25": "NoSuchHugepageFlag",
    "E26": "InsufficientMemoryRequested",
    "E27": "InsufficientMemoryAvailable",
    "E28": "InvalidEnclaveFd",
    "E29": "IoctlFailure",
    "E30": "IoctlImageLoadInfoFailure",
    "E31": "IoctlSetMemoryRegionFailure",
    "E32": "IoctlAddVcpuFailure",
    "E33": "IoctlEnclaveStartFailure",
    "E34": "MemoryOverflow",
    "E35": "EifParsingError",
    "E36": "EnclaveBootFailure",
    "E37": "EnclaveEventWaitError",
    "E38": "EnclaveProcessCommandNotExecuted",
    "E39": "EnclaveProcessConnectionFailure",
    "E40": "SocketPathNotFound",
    "E41": "EnclaveProcessSendReplyFailure",
    "E42": "EnclaveMmapError",
    "E43": "EnclaveMunmapError",
    "E44": "EnclaveConsoleConnectionFailure",
    "E45": "EnclaveConsoleReadError",
    "E46": "EnclaveConsoleWriteOutputError",
    "E47": "IntegerParsingError",
    "E48": "EifBuildingError",
    "E49": "DockerImageBuildError",
    "E50": "DockerImagePullError",
    "E51": "ArtifactsPathNotSet",
    "E52": "BlobsPathNotSet",
    "E53": "ClockSkewError",
    "E54": "SignalMaskingError",
    "E55": "SignalUnmaskingError",
    "E56": "LoggerError",
    "E57": "HasherError",
    "E58": "EnclaveNamingError",
    "E59": "EIFSignatureCheckerError",
    "E60": "EIFSigningError",
}

TEMPLATES: Final[Mapping[str, str]] = {
    "E00": "Unspecified error. This is used as a catch-all error and should not be used in the code.",
    "E01": "Missing mandatory argument. User did not provide the `{0}` argument.",
    "E02": "Conflicting arguments. User provided both `{0}` and `{1}`.",
    "E03": "Invalid argument provided. The parameter `{0}` is not a valid integer (`{1}`)",
    "E04": (
        "Socket pair creation failure. Such error appears when the Nitro CLI process attempts to open a "
        "stream pair in order to send a command to the enclave process but the stream initialization "
        "fails."
    ),
    "E05": (
        "Process spawn failure. Such error appears when the main Nitro CLI process fails to spawn the "
        "enclave process, in order to complete a `run-enclave` command."
    ),
    "E06": (
        "Daemonize process failure. Such error appears when the system fails to daemonize a newly "
        "spawned enclave process."
    ),
    "E07": (
        "Read from disk failure. Such error appears when the Nitro CLI process fails to read the content "
        "of the enclave sockets directory (usually '/run/nitro_enclaves/') in order to perform a "
        "`describe-enclave` operation. Check that the directory exists and it has proper permissions, or "
        "run the Nitro Enclaves configuration script in order to (re)configure the environment."
    ),
    "E08": (
        "Unusable connection error. Such error appears when the Nitro CLI process attempts to open a "
        "connection to a non-existing or previously closed enclave descriptor"
    ),
    "E09": (
        "Socket close error. Such error appears when the system fails to successfully close a "
        "communication channel."
    ),
    "E10": (
        "Socket connect set timeout error. Such error appears when the system fails to configure a "
        "specific timeout for a given socket. May arise when trying to connect to an enclave's console."
    ),
    "E11": (
        "Socket error. This is used as an error for catching any other socket operation errors not "
        "covered by previous custom errors."
    ),
    "E12": (
        "Epoll error. Such error appears, for instance, when the system fails to register a specific "
        "enclave descriptor with epoll in order to monitor events for it."
    ),
    "E13": (
        "Inotify error. Such error appears when the system fails to configure a socket for monitorization."
    ),
    "E14": (
        "Invalid command. Such error appears when an unknown command and / or unknown arguments are sent "
        "through a socket."
    ),
    "E15": (
        "Lock acquire failure. Such error appears when the system fails to obtain the lock for an object "
        "with concurrent access, such as a structure containing information about a running enclave."
    ),
    "E16": (
        "Thread join failure. Such error appears when the system fails to successfully join a thread, "
        "after it finished executing."
    ),
    "E17": "Serde error. Such error appears when serializing / deserializing a command or response fails.",
    "E18": (
        "File permissions error. Such error appears when a user other than the owner of the logging file "
        "(usually '/var/log/nitro_enclaves/nitro_enclaves.log') attempts to change the file permissions"
    ),
    "E20": "Invalid CPU configuration. User provided `{0}` contains same CPU(s) (CPU(s) {1}) multiple times.",
    "E21": (
        "No such CPU available in the pool. User provided `{0}` contains CPU {1}, which is not available "
        "in the pool.\nYou can add a specific CPU to the CPU pool by editing the `cpu_pool` value from "
        "'/etc/nitro_enclaves/allocator.yaml' and then enable the nitro-enclaves-allocator.service."
    ),
    "E22": (
        "Insufficient CPUs available in the pool. User provided `{0}` is {1}, which is more than the "
        "configured CPU pool size.\nYou can increase the CPU pool size by editing the `cpu_count` value "
        "from '/etc/nitro_enclaves/allocator.yaml' and then enable the nitro-enclaves-allocator.service."
    ),
    "E23": (
        "Malformed CPU ID error. Such error appears when a `lscpu` line is malformed and reports an "
        "invalid online CPUs list."
    ),
    "E24": "CPU error. Such error appears when a CPU line interval is invalid (for instance, 0-3-7)",
    "E25": (
        "No such hugepage flag error. Such error appears when the enclave process attempts to use an "
        "invalid hugepage size (size other than the known hugepage sizes) for initializing the enclave "
        "memory."
    ),
    "E27": (
        "Insufficient memory available. User provided `{0}` is {1} MB, which is more than the available "
        "hugepage memory.\nYou can increase the available memory by editing the `memory_mib` value from "
        "'/etc/nitro_enclaves/allocator.yaml' and then restart the nitro-enclaves-allocator.service."
    ),
    "E28": (
        "Invalid enclave descriptor. Such error appears when the NE_CREATE_VM ioctl returns with an error."
    ),
    "E29": (
        "Ioctl failure. Such error is used as a general ioctl error and appears whenever an ioctl fails. "
        "In this case, the error backtrace provides detailed information on what specifically failed "
        "during the ioctl."
    ),
    "E30": (
        "Ioctl image get load info failure. Such error appears when the ioctl used for getting the "
        "memory load information fails. In this case, the error backtrace provides detailed information "
        "on what specifically failed during the ioctl."
    ),
    "E31": (
        "Ioctl set memory region failure. Such error appears when the ioctl used for setting a given "
        "memory region fails. In this case, the error backtrace provides detailed information on what "
        "specifically failed during the ioctl."
    ),
    "E32": (
        "Ioctl add vCPU failure. Such error appears when the ioctl used for adding a vCPU fails. In this "
        "case, the error backtrace provides detailed information on what specifically failed during the "
        "ioctl."
    ),
    "E33": (
        "Ioctl start enclave failure. Such error appears when the ioctl used for starting an enclave "
        "fails. In this case, the error backtrace provides details information on what specifically "
        "failed during the ioctl."
    ),
    "E34": (
        "Memory overflow. Such error may appear during loading the EIF in the memory regions which will "
        "be conceded to the future enclave, if the regions offset plus the EIF file size exceeds the "
        "maximum address of the target platform."
    ),
    "E35": (
        "EIF file parsing error. Such errors appear when attempting to fill a memory region with a "
        "section of the EIF file, but reading the entire section fails. This might indicate that the "
        "required hugepages are not available."
    ),
    "E36": (
        "Enclave boot failure. Such error appears when attempting to receive the `ready` signal from a "
        "freshly booted enclave. It arises in several contexts, for instance, when the enclave is booted "
        "from an invalid EIF file and the enclave process immediately exits, failing to submit the "
        "`ready` signal. In this case, the error backtrace provides detailed information on what "
        "specifically failed during the enclave boot process."
    ),
    "E37": (
        "Enclave event wait error. Such error appears when monitoring an enclave descriptor for events fails."
    ),
    "E38": (
        "Enclave process command not executed error. Such error appears when at least one enclave fails "
        "to provide the description information."
    ),
    "E39": (
        "Enclave process connection failure. Such error appears when the enclave manager fails to "
        "connect to at least one enclave process for retrieving the description information."
    ),
    "E40": (
        "Socket path not found. Such error appears when the Nitro CLI process fails to build the "
        "corresponding socket path starting from a given enclave ID."
    ),
    "E41": (
        "Enclave process send reply failure. Such error appears when the enclave process fails to submit "
        "the status code to the Nitro CLI process after performing a run / describe / terminate command."
    ),
    "E42": "Enclave mmap error. Such error appears when allocating the enclave memory fails.",
    "E43": "Enclave munmap error. Such error appears when unmapping the enclave memory fails.",
    "E44": (
        "Enclave console connection failure. Such error appears when the Nitro CLI process fails to "
        "establish a connection to a running enclave's console."
    ),
    "E45": (
        "Enclave console read error. Such error appears when reading from a running enclave's console fails."
    ),
    "E46": (
        "Enclave console write output error. Such error appears when writing the information retrieved "
        "from a running enclave's console (to a given stream) fails."
    ),
    "E47": (
        "Integer parsing error. Such error appears when trying to connect to a running enclave's "
        "console, but the enclave CID cannot be parsed correctly."
    ),
    "E48": (
        "EIF building error. Such error appears when trying to build an EIF file. In this case, the "
        "error backtrace provides detailed information on the failure reason."
    ),
    "E49": (
        "Docker image build error. Such error appears when trying to build and EIF file, but building "
        "the corresponding docker image fails. In this case, the error backtrace provides detailed "
        "information on the failure reason."
    ),
    "E50": (
        "Docker image pull error. Such error appears when trying to build an EIF file, but pulling the "
        "corresponding docker image fails. In this case, the error backtrace provides detailed "
        "informatino on the failure reason."
    ),
    "E51": (
        "Artifacts path environment variable not set. Such error appears when trying to build an EIF "
        "file, but the artifacts path environment variable is not set."
    ),
    "E52": (
        "Blobs path environment variable not set. Such error appears when trying to build an EIF file, "
        "but the blobs path environment variable is not set."
    ),
    "E53": (
        "Clock skew error. Such error appears when continuously reading from a running enclave's "
        "console, but measuring the time elapsed between consecutive reads failed."
    ),
    "E54": (
        "Signal masking error. Such error appears if attempting to mask specific signals before creating "
        "an enclave process fails."
    ),
    "E55": (
        "Signal unmasking error. Such error appears if attempting to unmask specific signals after "
        "creating an enclave process fails."
    ),
    "E56": (
        "Logger error. Such error appears when attempting to initialize the underlying logging system fails."
    ),
    "E57": (
        "Hasher error. Such error appears when trying to initialize a hasher or write bytes to it, "
        "resulting in a IO error."
    ),
    "E58": (
        "Naming error. Such error appears when trying to perform an enclave operation using the enclave "
        "name and the name is invalid."
    ),
    "E59": (
        "EIF signature checker error. Such error appears when validation of the signing certificate fails."
    ),
    "E60": (
        "Signing error. Such error appears if incorrect key or certificate paths are provided, or when "
        "AWS credenrials need to be refreshed to use a KMS key."
    ),
}

E19_FILE_LINE = "\nFile: '{0}', failing operation: '{1}'."
E19 = (
    "File operation failure. Such error appears when the system fails to perform the requested file "
    "operations, such as opening the EIF file when launching an enclave, or seeking to a specific offset "
    "in the EIF file, or writing to the log file."
)
E26_EIF = (
    "Insufficient memory requested. User provided `{0}` is {1} MB, but based on the EIF file size, the "
    "minimum memory should be {2} MB"
)
E26_ZERO = (
    "Insufficient memory requested. User provided `{0}` is {1} MB, and memory should be greater than 0 MB."
)
