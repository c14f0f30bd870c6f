/*
 * TEST HARNESS ONLY. A WdfLdr.sys stand-in that lets khttp.sys run under Wine, which has no KMDF.
 *
 * Written by the khttp project. It implements, on WDM, exactly the KMDF 1.33 functions that
 * khttp.sys and the `wdk` crate call (the indices in driver/linux/include/wdf.h, sourced in
 * driver/linux/WDF-FACTS.md); every other entry of the 458-entry table logs a FAIL naming its
 * index and bugchecks. It is C rather than Rust because it is all WDM structure plumbing
 * (DRIVER_OBJECT, IRP stack locations, MDLs) that mingw-w64's DDK headers describe.
 *
 * Framework objects (WDF-FACTS §1a): up to four control devices, each with a sequential default
 * queue and up to four manual queues; WDFFILEOBJECTs with EvtDeviceFileCreate, EvtFileCleanup and
 * EvtFileClose in KMDF's order (Wine sends no IRP_MJ_CLEANUP, so IRP_MJ_CLOSE runs the cleanup
 * first, then waits for the file object's last request before EvtFileClose); forwarding to a
 * manual queue, retrieval (next, by file object) and IRP cancellation of parked requests
 * (EvtIoCanceledOnQueue). The verifier checks ownership of each request (completed twice, while
 * parked, after EvtFileClose; forwarded to another device's or its own queue) and reports
 * requests left parked and file objects never closed at unload.
 *
 * At bind time it also patches khttp.sys's import table (WINE-FACTS §6, route a):
 *  - functions Wine 8.0's ntoskrnl lacks or stubs: ExAllocatePool2, KeQueryInterruptTimePrecise,
 *    KeQuerySystemTimePrecise, MmBuildMdlForNonPagedPool;
 *  - verifier wrappers: ExFreePool (double or foreign free), IoAllocateIrp/IoFreeIrp/IoReuseIrp
 *    (an IRP freed or reused while netio still holds it), IoAllocateMdl/IoFreeMdl (an MDL freed
 *    while its IRP is pending), with counts that must be zero at unbind (leaks).
 * Findings go to the shared verifier log through the netio stand-in (KhttpHarnessLog).
 */
#include <ntddk.h>
#include "wdf.h"

/* ---- kernel32/ntdll functions (documented Win32 API), declared here to keep windows.h out of
 * a translation unit built on the DDK headers. ---- */
__declspec(dllimport) PVOID __stdcall GetModuleHandleA(const char *name);
__declspec(dllimport) PVOID __stdcall GetProcAddress(PVOID module, const char *name);
__declspec(dllimport) int __stdcall VirtualProtect(PVOID address, SIZE_T size, ULONG protect,
                                                   ULONG *old);
__declspec(dllimport) ULONG __stdcall TlsAlloc(void);
__declspec(dllimport) PVOID __stdcall TlsGetValue(ULONG index);
__declspec(dllimport) int __stdcall TlsSetValue(ULONG index, PVOID value);
__declspec(dllimport) void __stdcall Sleep(ULONG ms);
__declspec(dllimport) ULONG __stdcall GetFileAttributesA(const char *name);
#define TLS_OUT_OF_INDEXES_ 0xFFFFFFFFu
void *__cdecl calloc(size_t n, size_t size);
void __cdecl free(void *p);
int __cdecl _snprintf(char *buf, size_t n, const char *fmt, ...);
#define PAGE_READWRITE_ 0x04
NTSYSAPI NTSTATUS NTAPI ZwWaitForSingleObject(HANDLE handle, BOOLEAN alertable,
                                              PLARGE_INTEGER timeout);

/* ---- Verifier plumbing: the netio stand-in holds the in-flight sets and the log. ---- */
typedef void(__stdcall *LOG_FN)(const char *);
typedef ULONG(__stdcall *BUSY_FN)(PVOID);
typedef void(__stdcall *OUTSTANDING_FN)(ULONG *, ULONG *, ULONG *);
static LOG_FN HarnessLog;
static BUSY_FN IrpBusy, MdlBusy;
static OUTSTANDING_FN NetioOutstanding;
typedef ULONG64(__stdcall *SETTING_FN)(const char *);
typedef ULONG64(__stdcall *RANDOM_FN)(void);
static SETTING_FN HarnessSetting;
static RANDOM_FN HarnessRandom;

static void hlog(const char *line)
{
    if (HarnessLog != NULL) {
        HarnessLog(line);
    } else {
        DbgPrint("khttp-harness: %s\n", line);
    }
}

#define FAIL(...)                                             \
    do {                                                      \
        char line_[256];                                      \
        _snprintf(line_, sizeof(line_), "FAIL " __VA_ARGS__); \
        line_[sizeof(line_) - 1] = 0;                         \
        hlog(line_);                                          \
    } while (0)

#define INFO(...)                                    \
    do {                                             \
        char line_[256];                             \
        _snprintf(line_, sizeof(line_), __VA_ARGS__); \
        line_[sizeof(line_) - 1] = 0;                \
        hlog(line_);                                 \
    } while (0)

static void find_netio(void)
{
    PVOID m = GetModuleHandleA("netio.sys");
    if (m == NULL) {
        return;
    }
    HarnessLog = (LOG_FN)GetProcAddress(m, "KhttpHarnessLog");
    IrpBusy = (BUSY_FN)GetProcAddress(m, "KhttpHarnessIrpBusy");
    MdlBusy = (BUSY_FN)GetProcAddress(m, "KhttpHarnessMdlBusy");
    NetioOutstanding = (OUTSTANDING_FN)GetProcAddress(m, "KhttpHarnessOutstanding");
    HarnessSetting = (SETTING_FN)GetProcAddress(m, "KhttpHarnessSetting");
    HarnessRandom = (RANDOM_FN)GetProcAddress(m, "KhttpHarnessRandom");
}

/* ---- What Driver Verifier checks, as far as the stand-ins see (tests/wine/README.md) ----
 *
 * IRQL: each thread has a modelled IRQL (thread-local). A WDF spin lock raises it to
 * DISPATCH_LEVEL until released; the WDF timer's callback and, through KhttpHarnessRaise in the
 * netio stand-in, every IRP completion and WSK event callback run at DISPATCH_LEVEL, as they may
 * on Windows. Each wrapped kernel function checks its documented maximum IRQL.
 *
 * Locks: a synchronization event initialised signalled is a lock (the driver's PassiveLock);
 * waiting for one outside a critical region is a FAIL (a thread suspended while it holds it
 * stops every other taker). Spin locks and event locks are ordered: taking B while holding A
 * records A before B, and B before A later is a FAIL (a deadlock waiting to happen).
 *
 * Low resources: with fail-permille=N in the harness config, once the driver has started, N in a
 * thousand pool, IRP, MDL and work-item allocations fail, at random from the run's seed, as
 * Verifier's "Low Resources Simulation" does; KeBugCheckEx is a FAIL.
 *
 * Schedule: with perturb=N, N per cent of the framework's retrieve, forward, requeue, complete
 * and cancel points sleep 0-2 ms first, and netio delays completions likewise. */
static ULONG FailPermille, PerturbPct;
static volatile LONG Armed;    /* allocation failures on: from the end of DriverEntry to unload */
static volatile LONG Injected; /* allocations failed on purpose */
static volatile LONG Perturbed;
static ULONG IrqlTls = TLS_OUT_OF_INDEXES_, CritTls = TLS_OUT_OF_INDEXES_, HeldTls = TLS_OUT_OF_INDEXES_;
/* Set while the control device's EvtIoDeviceControl runs on this thread: administration is
 * spared the injected failures, so that the suite can set up what it tests (the engine's control
 * path has its own test in which every allocation fails in turn: engine/tests/alloc_fail.rs). */
static ULONG SpareTls = TLS_OUT_OF_INDEXES_;

static void verifier_init(void)
{
    IrqlTls = TlsAlloc();
    CritTls = TlsAlloc();
    HeldTls = TlsAlloc();
    SpareTls = TlsAlloc();
    if (HarnessSetting != NULL) {
        FailPermille = (ULONG)HarnessSetting("fail-permille");
        PerturbPct = (ULONG)HarnessSetting("perturb");
    }
    INFO("wdfldr: verifier: IRQL and lock checks on; low resources %lu per mille; schedule "
         "perturbation %lu%%",
         FailPermille, PerturbPct);
}

static ULONG64 rnd(void)
{
    return HarnessRandom != NULL ? HarnessRandom() : 0;
}

static KIRQL cur_irql(void)
{
    return IrqlTls == TLS_OUT_OF_INDEXES_ ? PASSIVE_LEVEL : (KIRQL)(ULONG_PTR)TlsGetValue(IrqlTls);
}

static void set_irql(KIRQL l)
{
    if (IrqlTls != TLS_OUT_OF_INDEXES_) {
        TlsSetValue(IrqlTls, (PVOID)(ULONG_PTR)l);
    }
}

/* Raises the modelled IRQL to DISPATCH_LEVEL; returns the old one (netio, around completions and
 * event callbacks). */
__declspec(dllexport) KIRQL __stdcall KhttpHarnessRaise(void)
{
    KIRQL old = cur_irql();
    if (old < DISPATCH_LEVEL) {
        set_irql(DISPATCH_LEVEL);
    }
    return old;
}

__declspec(dllexport) void __stdcall KhttpHarnessLower(KIRQL old)
{
    set_irql(old);
}

/* The modelled IRQL of this thread (netio's own checks). */
__declspec(dllexport) KIRQL __stdcall KhttpHarnessIrql(void)
{
    return cur_irql();
}

static void max_irql(const char *call, KIRQL max)
{
    KIRQL now = cur_irql();
    if (now > max) {
        FAIL("%s at IRQL %u: its documented maximum is %u", call, (unsigned)now, (unsigned)max);
    }
}

/* Whether this allocation fails on purpose (low resources). */
static BOOLEAN inject(const char *call)
{
    if (FailPermille == 0 || !Armed ||
        (SpareTls != TLS_OUT_OF_INDEXES_ && TlsGetValue(SpareTls) != NULL) ||
        rnd() % 1000 >= FailPermille) {
        return FALSE;
    }
    InterlockedIncrement(&Injected);
    (void)call;
    return TRUE;
}

/* A random short delay at a framework point (schedule perturbation); never under FxLock. */
static void perturb(void)
{
    ULONG64 r;
    if (PerturbPct == 0) {
        return;
    }
    r = rnd();
    if (r % 100 < PerturbPct) {
        InterlockedIncrement(&Perturbed);
        Sleep((ULONG)((r >> 8) % 3));
    }
}

/* ---- Lock tracking ---- */
#define MAX_LOCKS 64
#define MAX_HELD 8
static PVOID Locks[MAX_LOCKS];   /* known locks, by address */
static BOOLEAN IsEventLock[MAX_LOCKS];
static ULONG64 Before[MAX_LOCKS]; /* bit j of Before[i]: lock i was held while j was taken */
static KSPIN_LOCK LockTableLock;

typedef struct {
    ULONG n;
    ULONG ids[MAX_HELD];
} HELD_LOCKS;

static int lock_id(PVOID lock, BOOLEAN event_lock, BOOLEAN add)
{
    int i, free_slot = -1;
    KIRQL irql;
    KeAcquireSpinLock(&LockTableLock, &irql);
    for (i = 0; i < MAX_LOCKS; i++) {
        if (Locks[i] == lock) {
            KeReleaseSpinLock(&LockTableLock, irql);
            return i;
        }
        if (Locks[i] == NULL && free_slot < 0) {
            free_slot = i;
        }
    }
    if (add && free_slot >= 0) {
        Locks[free_slot] = lock;
        IsEventLock[free_slot] = event_lock;
    }
    KeReleaseSpinLock(&LockTableLock, irql);
    return add ? free_slot : -1;
}

static HELD_LOCKS *held_locks(void)
{
    HELD_LOCKS *h;
    if (HeldTls == TLS_OUT_OF_INDEXES_) {
        return NULL;
    }
    h = TlsGetValue(HeldTls);
    if (h == NULL) {
        h = calloc(1, sizeof(*h)); /* one per thread, kept: threads are few and long-lived */
        TlsSetValue(HeldTls, h);
    }
    return h;
}

static void lock_taken(PVOID lock, const char *what)
{
    int id = lock_id(lock, FALSE, TRUE);
    HELD_LOCKS *h = held_locks();
    ULONG i;
    KIRQL irql;
    if (id < 0 || h == NULL) {
        return;
    }
    for (i = 0; i < h->n; i++) {
        ULONG a = h->ids[i];
        BOOLEAN inverted;
        if (a == (ULONG)id) {
            FAIL("%s: lock %p taken again by the thread that holds it", what, lock);
            continue;
        }
        KeAcquireSpinLock(&LockTableLock, &irql);
        Before[a] |= 1ULL << id;
        inverted = (Before[id] >> a) & 1;
        KeReleaseSpinLock(&LockTableLock, irql);
        if (inverted) {
            FAIL("%s: lock %p taken while holding %p, which has been taken while holding it "
                 "(lock order inversion)",
                 what, lock, Locks[a]);
        }
    }
    if (h->n < MAX_HELD) {
        h->ids[h->n++] = (ULONG)id;
    }
}

static void lock_released(PVOID lock)
{
    int id = lock_id(lock, FALSE, FALSE);
    HELD_LOCKS *h = held_locks();
    ULONG i;
    if (id < 0 || h == NULL) {
        return;
    }
    for (i = h->n; i > 0; i--) {
        if (h->ids[i - 1] == (ULONG)id) {
            h->ids[i - 1] = h->ids[h->n - 1];
            h->n--;
            return;
        }
    }
}

static BOOLEAN is_event_lock(PVOID ev)
{
    int id = lock_id(ev, TRUE, FALSE);
    return id >= 0 && IsEventLock[id];
}

static LONG_PTR crit_depth(void)
{
    return CritTls == TLS_OUT_OF_INDEXES_ ? 0 : (LONG_PTR)TlsGetValue(CritTls);
}

/* ---- Replacement and wrapped kernel functions ---- */
static volatile LONG PoolCount, IrpCount, MdlCount;
static volatile LONG64 PoolBytes;
#define POOL_MAGIC 0x6c6f6f5068744b68ULL /* "hKthPool" */
#define POOL_DEAD 0x646165446874486bULL
#define POOL_FLAG_UNINITIALIZED_ 0x2ULL

typedef struct {
    ULONG64 magic;
    SIZE_T size;
} POOL_HEADER_;

/* ExAllocatePool2 (learn.microsoft.com nf-wdm-exallocatepool2): zeroed unless
 * POOL_FLAG_UNINITIALIZED, NULL on failure, tag must not be 0. */
static PVOID NTAPI h_ExAllocatePool2(ULONG64 flags, SIZE_T size, ULONG tag)
{
    POOL_HEADER_ *h;
    if (tag == 0) {
        FAIL("ExAllocatePool2: tag 0");
    }
    /* POOL_FLAG_PAGED (0x100): <= APC_LEVEL; non-paged: <= DISPATCH_LEVEL. */
    max_irql("ExAllocatePool2", (flags & 0x100) ? APC_LEVEL : DISPATCH_LEVEL);
    if (size > ((SIZE_T)1 << 40) || inject("ExAllocatePool2")) {
        return NULL;
    }
    h = ExAllocatePoolWithTag(NonPagedPool, size + sizeof(*h), tag);
    if (h == NULL) {
        return NULL;
    }
    if (!(flags & POOL_FLAG_UNINITIALIZED_)) {
        RtlZeroMemory(h + 1, size);
    } else {
        RtlFillMemory(h + 1, size, 0xA5); /* make reads of uninitialised pool visible */
    }
    h->magic = POOL_MAGIC;
    h->size = size;
    InterlockedIncrement(&PoolCount);
    InterlockedExchangeAdd64(&PoolBytes, (LONG64)size);
    return h + 1;
}

static VOID NTAPI h_ExFreePool(PVOID p)
{
    POOL_HEADER_ *h;
    max_irql("ExFreePool", DISPATCH_LEVEL);
    if (p == NULL) {
        FAIL("ExFreePool: NULL");
        return;
    }
    h = (POOL_HEADER_ *)p - 1;
    if (h->magic != POOL_MAGIC) {
        FAIL("ExFreePool: %p was freed twice or not allocated with ExAllocatePool2", p);
        return;
    }
    h->magic = POOL_DEAD;
    InterlockedDecrement(&PoolCount);
    InterlockedExchangeAdd64(&PoolBytes, -(LONG64)h->size);
    RtlFillMemory(p, h->size, 0xDD); /* use after free reads garbage */
    ExFreePool(h);
}

/* KeQueryInterruptTimePrecise (nf-wdm-kequeryinterrupttimeprecise): 100 ns units; the QPC value
 * through the out pointer. */
static ULONG64 NTAPI h_KeQueryInterruptTimePrecise(PULONG64 qpc)
{
    LARGE_INTEGER freq;
    LARGE_INTEGER now = KeQueryPerformanceCounter(&freq);
    if (qpc != NULL) {
        *qpc = (ULONG64)now.QuadPart;
    }
    if (freq.QuadPart <= 0) {
        return 0;
    }
    return (ULONG64)(now.QuadPart / freq.QuadPart) * 10000000ULL +
           (ULONG64)(now.QuadPart % freq.QuadPart) * 10000000ULL / (ULONG64)freq.QuadPart;
}

/* KeQuerySystemTimePrecise (nf-wdm-kequerysystemtimeprecise). */
static VOID NTAPI h_KeQuerySystemTimePrecise(PLARGE_INTEGER t)
{
    KeQuerySystemTime(t);
}

/* MmBuildMdlForNonPagedPool: Wine's is an empty stub (WINE-FACTS §4.1). Pool is the heap here,
 * so the system address is the virtual address. */
static VOID NTAPI h_MmBuildMdlForNonPagedPool(PMDL mdl)
{
    mdl->MappedSystemVa = (PCHAR)mdl->StartVa + mdl->ByteOffset;
    mdl->MdlFlags |= MDL_SOURCE_IS_NONPAGED_POOL;
}

static PIRP NTAPI h_IoAllocateIrp(CCHAR stack, BOOLEAN charge)
{
    PIRP irp;
    max_irql("IoAllocateIrp", DISPATCH_LEVEL);
    if (inject("IoAllocateIrp")) {
        return NULL;
    }
    irp = IoAllocateIrp(stack, charge);
    if (irp != NULL) {
        InterlockedIncrement(&IrpCount);
    }
    return irp;
}

static VOID NTAPI h_IoFreeIrp(PIRP irp)
{
    max_irql("IoFreeIrp", DISPATCH_LEVEL);
    if (IrpBusy != NULL && IrpBusy(irp)) {
        FAIL("IoFreeIrp: IRP %p freed while still pending in the WSK provider", irp);
        return; /* leak rather than let the provider complete freed memory */
    }
    InterlockedDecrement(&IrpCount);
    IoFreeIrp(irp);
}

static VOID NTAPI h_IoReuseIrp(PIRP irp, NTSTATUS status)
{
    max_irql("IoReuseIrp", DISPATCH_LEVEL);
    if (IrpBusy != NULL && IrpBusy(irp)) {
        FAIL("IoReuseIrp: IRP %p reused while still pending in the WSK provider", irp);
    }
    IoReuseIrp(irp, status);
}

static PMDL NTAPI h_IoAllocateMdl(PVOID va, ULONG length, BOOLEAN secondary, BOOLEAN charge,
                                  PIRP irp)
{
    PMDL mdl;
    max_irql("IoAllocateMdl", DISPATCH_LEVEL);
    if (inject("IoAllocateMdl")) {
        return NULL;
    }
    mdl = IoAllocateMdl(va, length, secondary, charge, irp);
    if (mdl != NULL) {
        InterlockedIncrement(&MdlCount);
    }
    return mdl;
}

static VOID NTAPI h_IoFreeMdl(PMDL mdl)
{
    max_irql("IoFreeMdl", DISPATCH_LEVEL);
    if (MdlBusy != NULL && MdlBusy(mdl)) {
        FAIL("IoFreeMdl: MDL %p freed while its IRP is still pending in the WSK provider", mdl);
        return;
    }
    InterlockedDecrement(&MdlCount);
    IoFreeMdl(mdl);
}

/* IoSetCompletionRoutineEx (nf-wdm-iosetcompletionroutineex): Wine exports it as a stub. As the
 * documentation describes it, it allocates a context that lives until the routine has run (so
 * it can fail with STATUS_INSUFFICIENT_RESOURCES, and an IRP prepared but never sent leaks it)
 * and keeps the driver loaded until the driver's routine has returned: the kernel's own wrapper
 * calls the routine, so no instruction of the driver runs after the reference is dropped.
 * Here: the wrapper below, a count of contexts not yet run (a FAIL at unload), the device
 * checked to be one of the driver's, and the call subject to injected failures. The netio
 * stand-in fails an IRP whose completion routine lies in khttp.sys itself (KhttpHarnessInDriver):
 * a plain IoSetCompletionRoutine, which leaves the window for bug check 0xCE at unload. */
/* The x64 WDM offsets the netio stand-in (Rust, no headers) uses, checked here against
 * mingw-w64's DDK headers. */
_Static_assert(offsetof(IRP, IoStatus.Status) == 0x30, "IRP::IoStatus.Status");
_Static_assert(offsetof(IRP, IoStatus.Information) == 0x38, "IRP::IoStatus.Information");
_Static_assert(offsetof(IRP, CurrentLocation) == 0x43, "IRP::CurrentLocation");
_Static_assert(offsetof(IRP, Tail.Overlay.CurrentStackLocation) == 0xB8,
               "IRP::Tail.Overlay.CurrentStackLocation");
_Static_assert(sizeof(IO_STACK_LOCATION) == 72, "IO_STACK_LOCATION is 72 bytes");
_Static_assert(offsetof(IO_STACK_LOCATION, CompletionRoutine) == 0x38,
               "IO_STACK_LOCATION::CompletionRoutine");

typedef struct EX_COMPLETION {
    PIO_COMPLETION_ROUTINE routine;
    PVOID context;
} EX_COMPLETION;

static volatile LONG ExPending;
static PUCHAR ImageStart;
static ULONG ImageSize;

static NTSTATUS NTAPI ex_complete(PDEVICE_OBJECT dev, PIRP irp, PVOID p)
{
    EX_COMPLETION x = *(EX_COMPLETION *)p;
    NTSTATUS s;
    ExFreePool(p);
    s = x.routine(dev, irp, x.context);
    InterlockedDecrement(&ExPending); /* the reference the kernel drops after the routine */
    return s;
}

static BOOLEAN is_driver_device(PDEVICE_OBJECT dev);

static NTSTATUS NTAPI h_IoSetCompletionRoutineEx(PDEVICE_OBJECT dev, PIRP irp,
                                                 PIO_COMPLETION_ROUTINE routine, PVOID context,
                                                 BOOLEAN success, BOOLEAN error, BOOLEAN cancel)
{
    EX_COMPLETION *x;
    max_irql("IoSetCompletionRoutineEx", DISPATCH_LEVEL);
    if (!is_driver_device(dev)) {
        FAIL("IoSetCompletionRoutineEx: %p is not one of khttp.sys's device objects", (void *)dev);
    }
    if (inject("IoSetCompletionRoutineEx")) {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    x = ExAllocatePool(NonPagedPool, sizeof(*x));
    if (x == NULL) {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    x->routine = routine;
    x->context = context;
    InterlockedIncrement(&ExPending);
    IoSetCompletionRoutine(irp, ex_complete, x, success, error, cancel);
    return STATUS_SUCCESS;
}

/* For the netio stand-in: TRUE when `addr` lies in khttp.sys's image. */
__declspec(dllexport) BOOLEAN __stdcall KhttpHarnessInDriver(PVOID addr)
{
    return ImageStart != NULL && (PUCHAR)addr >= ImageStart && (PUCHAR)addr < ImageStart + ImageSize;
}

/* The other wrapped imports: documented maximum IRQLs (driver/linux/WINDOWS-FACTS.md §5), the
 * lock and critical-region tracking, allocation failures and KeBugCheckEx. */
static PIO_WORKITEM NTAPI h_IoAllocateWorkItem(PDEVICE_OBJECT dev)
{
    max_irql("IoAllocateWorkItem", DISPATCH_LEVEL);
    return inject("IoAllocateWorkItem") ? NULL : IoAllocateWorkItem(dev);
}

static VOID NTAPI h_IoFreeWorkItem(PIO_WORKITEM item)
{
    max_irql("IoFreeWorkItem", DISPATCH_LEVEL);
    IoFreeWorkItem(item);
}

static VOID NTAPI h_IoQueueWorkItem(PIO_WORKITEM item, PIO_WORKITEM_ROUTINE routine,
                                    WORK_QUEUE_TYPE type, PVOID context)
{
    max_irql("IoQueueWorkItem", DISPATCH_LEVEL);
    IoQueueWorkItem(item, routine, type, context);
}

static NTSTATUS NTAPI h_KeDelayExecutionThread(KPROCESSOR_MODE mode, BOOLEAN alertable,
                                               PLARGE_INTEGER interval)
{
    max_irql("KeDelayExecutionThread", APC_LEVEL);
    return KeDelayExecutionThread(mode, alertable, interval);
}

static VOID NTAPI h_KeEnterCriticalRegion(void)
{
    max_irql("KeEnterCriticalRegion", APC_LEVEL);
    if (CritTls != TLS_OUT_OF_INDEXES_) {
        TlsSetValue(CritTls, (PVOID)(crit_depth() + 1));
    }
    KeEnterCriticalRegion();
}

static VOID NTAPI h_KeLeaveCriticalRegion(void)
{
    max_irql("KeLeaveCriticalRegion", APC_LEVEL);
    if (crit_depth() <= 0) {
        FAIL("KeLeaveCriticalRegion without KeEnterCriticalRegion");
    } else if (CritTls != TLS_OUT_OF_INDEXES_) {
        TlsSetValue(CritTls, (PVOID)(crit_depth() - 1));
    }
    KeLeaveCriticalRegion();
}

static VOID NTAPI h_KeInitializeEvent(PRKEVENT ev, EVENT_TYPE type, BOOLEAN state)
{
    max_irql("KeInitializeEvent", DISPATCH_LEVEL);
    if (type == SynchronizationEvent && state) {
        lock_id(ev, TRUE, TRUE); /* initialised free: used as a lock */
    }
    KeInitializeEvent(ev, type, state);
}

static LONG NTAPI h_KeSetEvent(PRKEVENT ev, KPRIORITY increment, BOOLEAN wait)
{
    max_irql("KeSetEvent", DISPATCH_LEVEL);
    if (is_event_lock(ev)) {
        lock_released(ev);
    }
    return KeSetEvent(ev, increment, wait);
}

static NTSTATUS NTAPI h_KeWaitForSingleObject(PVOID obj, KWAIT_REASON reason, KPROCESSOR_MODE mode,
                                              BOOLEAN alertable, PLARGE_INTEGER timeout)
{
    NTSTATUS st;
    BOOLEAN lock = is_event_lock(obj);
    /* A zero timeout may be used at DISPATCH_LEVEL; any other wait only at <= APC_LEVEL. */
    max_irql("KeWaitForSingleObject",
             timeout != NULL && timeout->QuadPart == 0 ? DISPATCH_LEVEL : APC_LEVEL);
    if (lock && crit_depth() <= 0) {
        FAIL("KeWaitForSingleObject: event lock %p taken outside a critical region (a thread "
             "suspended while holding it stops every other taker)",
             obj);
    }
    st = KeWaitForSingleObject(obj, reason, mode, alertable, timeout);
    if (lock && st == STATUS_SUCCESS) {
        lock_taken(obj, "KeWaitForSingleObject");
    }
    return st;
}

static NTSTATUS NTAPI h_ZwOpenKey(PHANDLE key, ACCESS_MASK access, POBJECT_ATTRIBUTES attrs)
{
    max_irql("ZwOpenKey", PASSIVE_LEVEL);
    return ZwOpenKey(key, access, attrs);
}

static NTSTATUS NTAPI h_ZwQueryValueKey(HANDLE key, PUNICODE_STRING name,
                                        KEY_VALUE_INFORMATION_CLASS cls, PVOID info, ULONG len,
                                        PULONG result)
{
    max_irql("ZwQueryValueKey", PASSIVE_LEVEL);
    return ZwQueryValueKey(key, name, cls, info, len, result);
}

static NTSTATUS NTAPI h_ZwClose(HANDLE h)
{
    max_irql("ZwClose", PASSIVE_LEVEL);
    return ZwClose(h);
}

static NTSTATUS NTAPI h_RtlWriteRegistryValue(ULONG relative, PCWSTR path, PCWSTR name, ULONG type,
                                              PVOID data, ULONG len)
{
    max_irql("RtlWriteRegistryValue", PASSIVE_LEVEL);
    return RtlWriteRegistryValue(relative, path, name, type, data, len);
}

static VOID NTAPI h_KeBugCheckEx(ULONG code, ULONG_PTR p1, ULONG_PTR p2, ULONG_PTR p3,
                                 ULONG_PTR p4)
{
    FAIL("KeBugCheckEx(%#lx, %p, %p, %p, %p): the driver would have crashed Windows", code,
         (void *)p1, (void *)p2, (void *)p3, (void *)p4);
    KeBugCheckEx(code, p1, p2, p3, p4);
}

static const struct {
    const char *name;
    PVOID with;
} Patches[] = {
    {"IoAllocateWorkItem", (PVOID)h_IoAllocateWorkItem},
    {"IoFreeWorkItem", (PVOID)h_IoFreeWorkItem},
    {"IoQueueWorkItem", (PVOID)h_IoQueueWorkItem},
    {"KeDelayExecutionThread", (PVOID)h_KeDelayExecutionThread},
    {"KeEnterCriticalRegion", (PVOID)h_KeEnterCriticalRegion},
    {"KeLeaveCriticalRegion", (PVOID)h_KeLeaveCriticalRegion},
    {"KeInitializeEvent", (PVOID)h_KeInitializeEvent},
    {"KeSetEvent", (PVOID)h_KeSetEvent},
    {"KeWaitForSingleObject", (PVOID)h_KeWaitForSingleObject},
    {"ZwOpenKey", (PVOID)h_ZwOpenKey},
    {"ZwQueryValueKey", (PVOID)h_ZwQueryValueKey},
    {"ZwClose", (PVOID)h_ZwClose},
    {"RtlWriteRegistryValue", (PVOID)h_RtlWriteRegistryValue},
    {"KeBugCheckEx", (PVOID)h_KeBugCheckEx},
    {"ExAllocatePool2", (PVOID)h_ExAllocatePool2},
    {"ExFreePool", (PVOID)h_ExFreePool},
    {"KeQueryInterruptTimePrecise", (PVOID)h_KeQueryInterruptTimePrecise},
    {"KeQuerySystemTimePrecise", (PVOID)h_KeQuerySystemTimePrecise},
    {"MmBuildMdlForNonPagedPool", (PVOID)h_MmBuildMdlForNonPagedPool},
    {"IoAllocateIrp", (PVOID)h_IoAllocateIrp},
    {"IoFreeIrp", (PVOID)h_IoFreeIrp},
    {"IoReuseIrp", (PVOID)h_IoReuseIrp},
    {"IoAllocateMdl", (PVOID)h_IoAllocateMdl},
    {"IoFreeMdl", (PVOID)h_IoFreeMdl},
    {"IoSetCompletionRoutineEx", (PVOID)h_IoSetCompletionRoutineEx},
};

static int ieq(const char *a, const char *b)
{
    for (; *a && *b; a++, b++) {
        char x = (char)(*a >= 'A' && *a <= 'Z' ? *a + 32 : *a);
        char y = (char)(*b >= 'A' && *b <= 'Z' ? *b + 32 : *b);
        if (x != y) {
            return 0;
        }
    }
    return *a == *b;
}

/* Rewrites the driver's ntoskrnl.exe import slots named in Patches. The PE/COFF layout (the
 * "PE Format" page on learn.microsoft.com): e_lfanew at 0x3C; a PE32+ optional header starts
 * 24 bytes into the NT headers and its import directory entry is at offset 120; an import
 * descriptor is 20 bytes (OriginalFirstThunk, TimeDateStamp, ForwarderChain, Name, FirstThunk);
 * a 64-bit thunk with bit 63 clear is the RVA of a hint/name entry (2-byte hint, then the name). */
static void patch_imports(PUCHAR image)
{
    ULONG nt = *(ULONG *)(image + 0x3C);
    PUCHAR opt = image + nt + 24;
    ULONG import_rva = *(ULONG *)(opt + 120);
    PUCHAR d;
    int patched = 0;
    if (*(USHORT *)opt != 0x20B || import_rva == 0) {
        FAIL("WdfVersionBind: khttp.sys is not a PE32+ image with imports");
        return;
    }
    for (d = image + import_rva; *(ULONG *)(d + 12) != 0; d += 20) {
        ULONG64 *names = (ULONG64 *)(image + *(ULONG *)(d + 0));
        PVOID *slots = (PVOID *)(image + *(ULONG *)(d + 16));
        ULONG i;
        if (!ieq((const char *)(image + *(ULONG *)(d + 12)), "ntoskrnl.exe")) {
            continue;
        }
        for (i = 0; names[i] != 0; i++) {
            const char *name;
            ULONG k;
            if (names[i] >> 63) {
                continue;
            }
            name = (const char *)(image + (ULONG)names[i] + 2);
            for (k = 0; k < sizeof(Patches) / sizeof(Patches[0]); k++) {
                ULONG old;
                if (!ieq(name, Patches[k].name)) {
                    continue;
                }
                VirtualProtect(&slots[i], sizeof(PVOID), PAGE_READWRITE_, &old);
                slots[i] = Patches[k].with;
                VirtualProtect(&slots[i], sizeof(PVOID), old, &old);
                patched++;
            }
        }
    }
    INFO("wdfldr: patched %d ntoskrnl imports of khttp.sys, loaded at %p (WdfLdr.sys's code near %p)",
         patched, (void *)image, (void *)patch_imports);
}

/* ---- WDF objects ----
 * Handles are pointers to the records below. Every list and every field that changes after
 * DriverEntry is guarded by FxLock (a KSPIN_LOCK: Wine's busy-waits and raises no IRQL). Nothing
 * calls the driver, IoCompleteRequest or the log while holding it.
 *
 * Requests (WDF-FACTS §1a.4): a FX_REQUEST per IRP presented to the driver, live from its
 * presentation (EvtIoDeviceControl, EvtDeviceFileCreate) until it is completed. It is in one of
 * three states: the driver owns it (presented, retrieved from a queue, or handed to
 * EvtIoCanceledOnQueue); it sits in a manual queue with an IRP cancel routine set; or it was
 * taken out of its queue by a cancel and waits for EvtIoCanceledOnQueue. */
typedef struct FX_DEVICE FX_DEVICE;

enum { RQ_DRIVER = 1, RQ_QUEUED, RQ_CANCELING };

typedef struct FX_QUEUE {
    FX_DEVICE *dev;
    WDF_IO_QUEUE_DISPATCH_TYPE type;
    PFN_WDF_IO_QUEUE_IO_DEVICE_CONTROL ioctl;
    PFN_WDF_IO_QUEUE_IO_CANCELED_ON_QUEUE canceled;
    LIST_ENTRY parked; /* FX_REQUEST.qlink, oldest first (manual queues only) */
    /* A sequential queue presents one request at a time: the one the driver was handed and has
     * not yet completed, forwarded or requeued, and those that arrived behind it. */
    struct FX_REQUEST *current;
    LIST_ENTRY waiting; /* FX_REQUEST.qlink, oldest first */
} FX_QUEUE;

/* A WDFFILEOBJECT: one per FILE_OBJECT opened on a device with a file object configuration
 * (WdfFileObjectWdfCannotUseFsContexts: the framework keeps its own table, FsContext untouched). */
typedef struct FX_FILE {
    LIST_ENTRY link; /* in FX_DEVICE.files */
    FX_DEVICE *dev;
    PFILE_OBJECT fo;
    LONG outstanding; /* live requests of this file object (presented, parked or canceling) */
    BOOLEAN opened;   /* its create request completed with success */
    BOOLEAN failed;   /* its create request failed after the close arrived (Wine only) */
    BOOLEAN cleaned;  /* EvtFileCleanup called and the queues flushed */
    BOOLEAN closing;  /* IRP_MJ_CLOSE arrived */
    BOOLEAN finishing; /* EvtFileClose is being called: the record is about to go */
    PIRP close_irp;   /* the pended IRP_MJ_CLOSE */
} FX_FILE;

typedef struct FX_REQUEST {
    LIST_ENTRY live;  /* in LiveRequests */
    LIST_ENTRY qlink; /* in FX_QUEUE.parked while RQ_QUEUED */
    PIRP irp;
    FX_DEVICE *dev;
    FX_QUEUE *queue; /* the queue it was presented from, retrieved from, or parked in */
    FX_FILE *file;   /* NULL on devices without a file object configuration */
    int state;
    BOOLEAN was_queued; /* ever parked (cancelable): its IRP is held after completion */
    ULONG out_len, in_len, code; /* its IOCTL parameters, for a presentation that waits */
    /* WdfRequestMarkCancelableEx: the driver's EvtRequestCancel, while marked. */
    PFN_WDF_REQUEST_CANCEL cancel_fn;
    BOOLEAN cancelable;     /* marked, and not unmarked */
    BOOLEAN in_cancel;      /* EvtRequestCancel was called for it: it may complete it */
    BOOLEAN presented;      /* handed to EvtIoDeviceControl (not waiting in a sequential queue) */
    BOOLEAN overdue;        /* reported by the ownership watch */
    ULONG64 since;          /* when the driver came to own it (100 ns; h_KeQueryInterruptTimePrecise) */
} FX_REQUEST;

typedef struct FX_INIT {
    WCHAR name[64];
    USHORT name_len;
    BOOLEAN exclusive;
    BOOLEAN has_fcfg;
    WDF_FILEOBJECT_CONFIG fcfg;
} FX_INIT;

#define MAX_DEVICES 4
#define MAX_MANUAL 4
struct FX_DEVICE {
    PDEVICE_OBJECT dev;
    WCHAR name[64];
    USHORT name_len;
    WCHAR link[64];
    USHORT link_len;
    FX_QUEUE *queue;              /* the default queue */
    FX_QUEUE *manual[MAX_MANUAL]; /* non-default manual queues */
    BOOLEAN has_fcfg;
    WDF_FILEOBJECT_CONFIG fcfg;
    LIST_ENTRY files; /* FX_FILE.link */
    volatile LONG ready;
};

_Static_assert(sizeof(WDF_FILEOBJECT_CONFIG) == 40, "WDF_FILEOBJECT_CONFIG is 40 bytes on x64");

typedef struct FX_TIMER {
    PFN_WDF_TIMER fn;
    ULONG period_ms;
    HANDLE thread;
    KEVENT stop;
    volatile LONG running;
    HANDLE owner;
    LONG64 due;
} FX_TIMER;

typedef struct FX_SPIN {
    KSPIN_LOCK lock;
    KIRQL irql;
    KIRQL model; /* the holder's modelled IRQL before it took the lock */
} FX_SPIN;

static WDF_DRIVER_GLOBALS Globals;
static PDRIVER_OBJECT Driver;
static PFN_WDF_DRIVER_UNLOAD EvtUnload;
static FX_DEVICE *Devices[MAX_DEVICES];
static FX_TIMER *Timers[4];
static FX_SPIN *Spins[16];
static volatile LONG PendingRequests; /* live FX_REQUESTs */
static volatile LONG WdfObjects;
static KSPIN_LOCK FxLock;
static LIST_ENTRY LiveRequests = {&LiveRequests, &LiveRequests};
static volatile LONG Deferred;  /* framework work items queued or running */
static volatile LONG Unloading; /* set once EvtDriverUnload has returned */
static volatile LONG FilesOpened, RequestsForwarded, CanceledOnQueue, ClosesPended;
static volatile LONG StaleCancels;
static volatile LONG SequentialWaits; /* requests a sequential queue held back */
static volatile LONG RequestCancels;  /* EvtRequestCancel calls */

/* ---- A Wine race, held off ----
 * Wine 8.0 races a dead process's cancel against completion: wineserver queues the cancel of a
 * pending IRP with its raw pointer, and ntoskrnl's dispatch_cancel later calls IoCancelIrp on
 * it, whether or not the IRP was completed and freed meanwhile (dlls/ntoskrnl.exe/ntoskrnl.c,
 * server/device.c). A receive the driver parks (cancelable) and completes just as its
 * application dies then has IoCancelIrp write into, and call through, freed memory. Windows
 * has no such race (its I/O manager owns the IRP until completion). So an IRP that was ever
 * parked is kept alive after completion, in a ring, with a cancel routine that only counts,
 * until newer ones push it out. TEST HARNESS ONLY. */
#define HELD_RING 256
typedef struct HELD {
    PIO_COMPLETION_ROUTINE routine;
    PVOID context;
} HELD;
static PIRP Held[HELD_RING];
static ULONG HeldNext;

static VOID NTAPI stale_cancel(PDEVICE_OBJECT dev, PIRP irp)
{
    (void)dev;
    IoReleaseCancelSpinLock(irp->CancelIrql);
    InterlockedIncrement(&StaleCancels);
}

/* Frees a held IRP for good: Wine's completion already ran, so a second IoCompleteRequest
 * only frees it (CurrentLocation is past its stack, as in Wine's own loop). One whose stale
 * cancel runs right now is left alone (leaked). */
static void release_held(PIRP old)
{
    if (IoSetCancelRoutine(old, NULL) != NULL) {
        IoCompleteRequest(old, IO_NO_INCREMENT);
    }
}

static NTSTATUS NTAPI held_done(PDEVICE_OBJECT dev, PIRP irp, PVOID context)
{
    HELD h = *(HELD *)context;
    NTSTATUS s = STATUS_SUCCESS;
    PIRP old;
    KIRQL irql;
    free(context);
    if (h.routine != NULL) {
        s = h.routine(dev, irp, h.context);
    }
    if (s == STATUS_MORE_PROCESSING_REQUIRED) {
        return s; /* completed inside its dispatch: Wine frees it, and no cancel can follow */
    }
    IoSetCancelRoutine(irp, stale_cancel);
    KeAcquireSpinLock(&FxLock, &irql);
    old = Held[HeldNext % HELD_RING];
    Held[HeldNext % HELD_RING] = irp;
    HeldNext++;
    KeReleaseSpinLock(&FxLock, irql);
    if (old != NULL) {
        release_held(old);
    }
    return STATUS_MORE_PROCESSING_REQUIRED;
}

/* Makes `irp` (of a request that was parked) held after its completion (see above). */
static void hold_after_completion(PIRP irp)
{
    PIO_STACK_LOCATION sl = IoGetCurrentIrpStackLocation(irp);
    HELD *h = calloc(1, sizeof(*h));
    if (h == NULL) {
        return;
    }
    h->routine = sl->CompletionRoutine;
    h->context = sl->Context;
    sl->CompletionRoutine = held_done;
    sl->Context = h;
    sl->Control |= SL_INVOKE_ON_SUCCESS | SL_INVOKE_ON_ERROR | SL_INVOKE_ON_CANCEL;
}

/* Unload: every held IRP is freed. */
static void release_all_held(void)
{
    ULONG i;
    KIRQL irql;
    PIRP all[HELD_RING];
    KeAcquireSpinLock(&FxLock, &irql);
    for (i = 0; i < HELD_RING; i++) {
        all[i] = Held[i];
        Held[i] = NULL;
    }
    KeReleaseSpinLock(&FxLock, irql);
    for (i = 0; i < HELD_RING; i++) {
        if (all[i] != NULL) {
            release_held(all[i]);
        }
    }
}

/* Recently completed requests, to tell a second completion (and one after its file object's
 * EvtFileClose) from a bad handle without touching freed memory. */
#define DEAD_RING 64
static struct {
    PVOID request;
    PVOID file;
    BOOLEAN file_closed;
} Dead[DEAD_RING];
static ULONG DeadNext;

static void check_size(const char *what, ULONG got, ULONG want)
{
    if (got != want) {
        FAIL("%s: Size %lu, expected %lu (KMDF 1.33 x64)", what, got, want);
    }
}

static KIRQL fx_lock(void)
{
    KIRQL irql;
    KeAcquireSpinLock(&FxLock, &irql);
    return irql;
}

static void fx_unlock(KIRQL irql)
{
    KeReleaseSpinLock(&FxLock, irql);
}

/* ---- Lookups; the caller holds FxLock. They compare pointers and never dereference a handle
 * before finding it. ---- */
static FX_DEVICE *device_of_locked(PDEVICE_OBJECT dev)
{
    ULONG i;
    for (i = 0; i < MAX_DEVICES; i++) {
        if (Devices[i] != NULL && Devices[i]->dev == dev) {
            return Devices[i];
        }
    }
    return NULL;
}

/* TRUE when `dev` is the WDM device object of one of the driver's devices. */
static BOOLEAN is_driver_device(PDEVICE_OBJECT dev)
{
    KIRQL irql = fx_lock();
    BOOLEAN found = device_of_locked(dev) != NULL;
    fx_unlock(irql);
    return found;
}

static BOOLEAN is_device_locked(FX_DEVICE *d)
{
    ULONG i;
    for (i = 0; i < MAX_DEVICES; i++) {
        if (d != NULL && Devices[i] == d) {
            return TRUE;
        }
    }
    return FALSE;
}

static BOOLEAN is_queue_locked(FX_QUEUE *q)
{
    ULONG i, k;
    for (i = 0; i < MAX_DEVICES; i++) {
        FX_DEVICE *d = Devices[i];
        if (d == NULL || q == NULL) {
            continue;
        }
        if (d->queue == q) {
            return TRUE;
        }
        for (k = 0; k < MAX_MANUAL; k++) {
            if (d->manual[k] == q) {
                return TRUE;
            }
        }
    }
    return FALSE;
}

static BOOLEAN is_live_locked(FX_REQUEST *r)
{
    PLIST_ENTRY e;
    for (e = LiveRequests.Flink; e != &LiveRequests; e = e->Flink) {
        if (CONTAINING_RECORD(e, FX_REQUEST, live) == r) {
            return TRUE;
        }
    }
    return FALSE;
}

/* The file object record of a FILE_OBJECT, unless its EvtFileClose has begun. */
static FX_FILE *file_of_locked(FX_DEVICE *d, PFILE_OBJECT fo)
{
    PLIST_ENTRY e;
    for (e = d->files.Flink; e != &d->files; e = e->Flink) {
        FX_FILE *f = CONTAINING_RECORD(e, FX_FILE, link);
        if (f->fo == fo && !f->finishing) {
            return f;
        }
    }
    return NULL;
}

/* A WDFFILEOBJECT handle that is still valid (until EvtFileClose returns). */
static BOOLEAN is_file_locked(FX_FILE *f)
{
    ULONG i;
    for (i = 0; i < MAX_DEVICES; i++) {
        FX_DEVICE *d = Devices[i];
        PLIST_ENTRY e;
        if (d == NULL || f == NULL) {
            continue;
        }
        for (e = d->files.Flink; e != &d->files; e = e->Flink) {
            if (CONTAINING_RECORD(e, FX_FILE, link) == f) {
                return TRUE;
            }
        }
    }
    return FALSE;
}

static void present_locked(FX_REQUEST *r, FX_FILE *f)
{
    r->file = f;
    if (f != NULL) {
        f->outstanding++;
    }
    InsertTailList(&LiveRequests, &r->live);
    InterlockedIncrement(&PendingRequests);
}

/* Moves the parked requests of q (those of file object f, or all when f is NULL) whose cancel
 * routine could be cleared onto out, as RQ_CANCELING. A request whose cancel routine is already
 * NULL is being canceled by IoCancelIrp: its cancel routine removes it. */
static ULONG take_parked_locked(FX_QUEUE *q, FX_FILE *f, PLIST_ENTRY out)
{
    PLIST_ENTRY e, next;
    ULONG n = 0;
    for (e = q->parked.Flink; e != &q->parked; e = next) {
        FX_REQUEST *r = CONTAINING_RECORD(e, FX_REQUEST, qlink);
        next = e->Flink;
        if (f != NULL && r->file != f) {
            continue;
        }
        if (IoSetCancelRoutine(r->irp, NULL) == NULL) {
            continue;
        }
        RemoveEntryList(e);
        r->state = RQ_CANCELING;
        InsertTailList(out, e);
        n++;
    }
    return n;
}

static void remember_dead_locked(FX_REQUEST *r, FX_FILE *f)
{
    ULONG i = DeadNext++ % DEAD_RING;
    Dead[i].request = r;
    Dead[i].file = f;
    Dead[i].file_closed = FALSE;
}

static void mark_file_closed_locked(FX_FILE *f)
{
    ULONG i;
    for (i = 0; i < DEAD_RING; i++) {
        if (Dead[i].file == f) {
            Dead[i].file_closed = TRUE;
        }
    }
}

/* ---- Deferred calls: a work item on the device (Wine runs them on a thread pool). Used for the
 * callbacks KMDF makes from another context: EvtIoCanceledOnQueue after an IRP cancel, and
 * EvtFileClose after the last request of a closed file object completes (on Windows the close
 * comes from the I/O manager's final dereference, never from inside WdfRequestComplete). Calling
 * the driver from inside Wine's IoCancelIrp would also hold ntoskrnl's IRP completion lock
 * (dispatch_cancel), so a driver completing another request under its own lock would deadlock
 * on Wine only. ---- */
typedef struct FX_WORK {
    PIO_WORKITEM item;
    void (*fn)(void *);
    void *arg;
} FX_WORK;

static VOID NTAPI work_run(PDEVICE_OBJECT dev, PVOID ctx)
{
    FX_WORK *w = ctx;
    (void)dev;
    w->fn(w->arg);
    IoFreeWorkItem(w->item);
    free(w);
    InterlockedDecrement(&Deferred);
}

static void defer(FX_DEVICE *d, void (*fn)(void *), void *arg)
{
    FX_WORK *w = calloc(1, sizeof(*w));
    if (w != NULL) {
        w->item = IoAllocateWorkItem(d->dev);
    }
    if (w == NULL || w->item == NULL) {
        free(w);
        INFO("wdfldr: no work item; calling the framework callback inline");
        fn(arg);
        return;
    }
    w->fn = fn;
    w->arg = arg;
    InterlockedIncrement(&Deferred);
    IoQueueWorkItem(w->item, work_run, DelayedWorkQueue, w);
}

static void drain_deferred(const char *when)
{
    LARGE_INTEGER tick;
    int i;
    tick.QuadPart = -10 * 1000 * 10; /* 10 ms */
    for (i = 0; Deferred != 0 && i < 1000; i++) {
        KeDelayExecutionThread(KernelMode, FALSE, &tick);
    }
    if (Deferred != 0) {
        FAIL("unload: %ld framework callbacks (cancel or close) still running %s", Deferred, when);
    }
}

/* ---- IRP dispatch ---- */
static NTSTATUS fx_fail(PIRP irp, NTSTATUS status)
{
    irp->IoStatus.Status = status;
    irp->IoStatus.Information = 0;
    IoCompleteRequest(irp, IO_NO_INCREMENT);
    return status;
}

static NTSTATUS NTAPI fx_ok(PDEVICE_OBJECT dev, PIRP irp)
{
    (void)dev;
    return fx_fail(irp, STATUS_SUCCESS);
}

static void finish_close(FX_FILE *f);
static void complete_request(const char *who, WDFREQUEST request, NTSTATUS status,
                             ULONG_PTR info);

static void finish_close_cb(void *arg)
{
    finish_close(arg);
}

/* The framework's cancel of a request it holds in a queue: EvtIoCanceledOnQueue (the driver now
 * owns the request and completes it), or STATUS_CANCELLED if the queue has no such callback. */
static void deliver_canceled(void *arg)
{
    FX_REQUEST *r = arg;
    FX_QUEUE *q;
    KIRQL irql;
    perturb();
    irql = fx_lock();
    q = r->queue;
    r->state = RQ_DRIVER;
    r->since = h_KeQueryInterruptTimePrecise(NULL);
    fx_unlock(irql);
    InterlockedIncrement(&CanceledOnQueue);
    if (q->canceled != NULL) {
        q->canceled((WDFQUEUE)q, (WDFREQUEST)r);
    } else {
        complete_request("the framework's cancel", (WDFREQUEST)r, STATUS_CANCELLED, 0);
    }
}

/* The IRP cancel routine of a parked request (IoCancelIrp: Wine's dispatch_cancel, when the
 * application cancels or its process exits). Called with the cancel spin lock held and the
 * routine already cleared, so no retriever can have taken the request. */
static VOID NTAPI fx_cancel(PDEVICE_OBJECT dev, PIRP irp)
{
    FX_REQUEST *found = NULL;
    ULONG i, k;
    KIRQL irql;
    (void)dev;
    IoReleaseCancelSpinLock(irp->CancelIrql);
    irql = fx_lock();
    for (i = 0; i < MAX_DEVICES && found == NULL; i++) {
        for (k = 0; Devices[i] != NULL && k < MAX_MANUAL && found == NULL; k++) {
            FX_QUEUE *q = Devices[i]->manual[k];
            PLIST_ENTRY e;
            if (q == NULL) {
                continue;
            }
            for (e = q->parked.Flink; e != &q->parked; e = e->Flink) {
                FX_REQUEST *r = CONTAINING_RECORD(e, FX_REQUEST, qlink);
                if (r->irp == irp) {
                    RemoveEntryList(e);
                    r->state = RQ_CANCELING;
                    found = r;
                    break;
                }
            }
        }
    }
    fx_unlock(irql);
    if (found == NULL) {
        FAIL("IoCancelIrp: IRP %p has the harness's cancel routine but is in no queue", irp);
        return;
    }
    defer(found->dev, deliver_canceled, found);
}

/* EvtFileCleanup, then the requests of the file object still parked in the device's queues are
 * canceled (FxPkgGeneral::OnCleanup: callback, then FlushAllQueuesByFileObject). Once per file
 * object. The driver completes the ones it holds itself. */
static void file_cleanup(FX_FILE *f)
{
    FX_DEVICE *d = f->dev;
    LIST_ENTRY flushed;
    BOOLEAN first;
    ULONG k;
    KIRQL irql = fx_lock();
    first = !f->cleaned;
    f->cleaned = TRUE;
    fx_unlock(irql);
    if (!first) {
        return;
    }
    if (d->fcfg.EvtFileCleanup != NULL) {
        d->fcfg.EvtFileCleanup((WDFFILEOBJECT)f);
    }
    InitializeListHead(&flushed);
    irql = fx_lock();
    for (k = 0; k < MAX_MANUAL; k++) {
        if (d->manual[k] != NULL) {
            take_parked_locked(d->manual[k], f, &flushed);
        }
    }
    fx_unlock(irql);
    while (!IsListEmpty(&flushed)) {
        deliver_canceled(CONTAINING_RECORD(RemoveHeadList(&flushed), FX_REQUEST, qlink));
    }
}

/* EvtFileClose once the file object has no live request, then the record goes and the close
 * IRP completes. */
static void finish_close(FX_FILE *f)
{
    FX_DEVICE *d = f->dev;
    PIRP irp = f->close_irp;
    KIRQL irql;
    if (f->failed) {
        /* KMDF calls neither callback for a file object whose create failed. */
    } else if (Unloading) {
        INFO("wdfldr: file object %p closed after EvtDriverUnload; EvtFileClose not called", f);
    } else if (d->fcfg.EvtFileClose != NULL) {
        d->fcfg.EvtFileClose((WDFFILEOBJECT)f);
    }
    irql = fx_lock();
    RemoveEntryList(&f->link);
    mark_file_closed_locked(f);
    fx_unlock(irql);
    free(f);
    InterlockedDecrement(&WdfObjects);
    fx_fail(irp, STATUS_SUCCESS);
}

/* IRP_MJ_CREATE. On a device with a file object configuration: a WDFFILEOBJECT for the IRP's
 * FILE_OBJECT, and EvtDeviceFileCreate with the create as a request, which the driver must
 * complete (WDF-FACTS §1a.4). Without a callback the framework completes it with success. */
static NTSTATUS NTAPI fx_create(PDEVICE_OBJECT dev, PIRP irp)
{
    PIO_STACK_LOCATION sl = IoGetCurrentIrpStackLocation(irp);
    PFN_WDF_DEVICE_FILE_CREATE create;
    FX_DEVICE *d;
    FX_FILE *f, *dup;
    FX_REQUEST *r = NULL;
    KIRQL irql = fx_lock();
    d = device_of_locked(dev);
    fx_unlock(irql);
    if (d == NULL || !d->has_fcfg) {
        return fx_ok(dev, irp);
    }
    if (!d->ready) {
        return fx_fail(irp, STATUS_INVALID_DEVICE_STATE);
    }
    if (sl->FileObject == NULL) {
        FAIL("IRP_MJ_CREATE without a FILE_OBJECT");
        return fx_fail(irp, STATUS_INVALID_PARAMETER);
    }
    create = d->fcfg.EvtDeviceFileCreate;
    f = calloc(1, sizeof(*f));
    if (create != NULL) {
        r = calloc(1, sizeof(*r));
    }
    if (f == NULL || (create != NULL && r == NULL)) {
        free(f);
        free(r);
        return fx_fail(irp, STATUS_INSUFFICIENT_RESOURCES);
    }
    InterlockedIncrement(&WdfObjects);
    InterlockedIncrement(&FilesOpened);
    f->dev = d;
    f->fo = sl->FileObject;
    f->opened = create == NULL;
    if (r != NULL) {
        r->irp = irp;
        r->dev = d;
        r->queue = NULL; /* KMDF's internal create queue: not one the driver can name */
        r->state = RQ_DRIVER;
        IoMarkIrpPending(irp);
    }
    irql = fx_lock();
    dup = file_of_locked(d, f->fo);
    InsertTailList(&d->files, &f->link);
    if (r != NULL) {
        present_locked(r, f);
    }
    fx_unlock(irql);
    if (dup != NULL) {
        FAIL("IRP_MJ_CREATE: FILE_OBJECT %p already has file object %p (harness bug)", f->fo, dup);
    }
    if (r == NULL) {
        return fx_ok(dev, irp);
    }
    create((WDFDEVICE)d, (WDFREQUEST)r, (WDFFILEOBJECT)f);
    return STATUS_PENDING;
}

/* IRP_MJ_CLEANUP: Wine 8.0 never sends it (WINE-FACTS §4.2 item 5); handled for completeness. */
static NTSTATUS NTAPI fx_cleanup(PDEVICE_OBJECT dev, PIRP irp)
{
    PIO_STACK_LOCATION sl = IoGetCurrentIrpStackLocation(irp);
    FX_DEVICE *d;
    FX_FILE *f = NULL;
    KIRQL irql = fx_lock();
    d = device_of_locked(dev);
    if (d != NULL && d->has_fcfg) {
        f = file_of_locked(d, sl->FileObject);
    }
    fx_unlock(irql);
    if (f != NULL) {
        file_cleanup(f);
    }
    return fx_ok(dev, irp);
}

/* IRP_MJ_CLOSE, which Wine sends when the last handle closes, with the file object's requests
 * possibly still pending: KMDF's cleanup (unless IRP_MJ_CLEANUP did it), then EvtFileClose once
 * no request of the file object is live; until then the close IRP stays pending. */
static NTSTATUS NTAPI fx_close(PDEVICE_OBJECT dev, PIRP irp)
{
    PIO_STACK_LOCATION sl = IoGetCurrentIrpStackLocation(irp);
    FX_DEVICE *d;
    FX_FILE *f = NULL;
    BOOLEAN twice = FALSE, now = FALSE;
    KIRQL irql = fx_lock();
    d = device_of_locked(dev);
    if (d != NULL && d->has_fcfg) {
        f = file_of_locked(d, sl->FileObject);
        if (f != NULL && f->closing) {
            twice = TRUE;
            f = NULL;
        } else if (f != NULL) {
            f->closing = TRUE;
        }
    }
    fx_unlock(irql);
    if (twice) {
        FAIL("IRP_MJ_CLOSE: FILE_OBJECT %p closed twice", sl->FileObject);
    }
    if (f == NULL) {
        return fx_ok(dev, irp); /* no file object (create failed) or no configuration */
    }
    file_cleanup(f);
    IoMarkIrpPending(irp);
    irql = fx_lock();
    f->close_irp = irp;
    if (f->outstanding == 0 && !f->finishing) {
        f->finishing = TRUE;
        now = TRUE;
    }
    fx_unlock(irql);
    if (now) {
        finish_close(f);
    } else {
        InterlockedIncrement(&ClosesPended);
    }
    return STATUS_PENDING;
}

/* IRP_MJ_DEVICE_CONTROL: the device's default queue's EvtIoDeviceControl. */
/* Calls the queue's EvtIoDeviceControl; the control device's are spared injected allocation
 * failures (SpareTls). */
static void present(FX_QUEUE *q, FX_REQUEST *r)
{
    BOOLEAN spare = !q->dev->has_fcfg && SpareTls != TLS_OUT_OF_INDEXES_;
    if (spare) {
        TlsSetValue(SpareTls, (PVOID)1);
    }
    q->ioctl((WDFQUEUE)q, (WDFREQUEST)r, r->out_len, r->in_len, r->code);
    if (spare) {
        TlsSetValue(SpareTls, NULL);
    }
}

static NTSTATUS NTAPI fx_ioctl(PDEVICE_OBJECT dev, PIRP irp)
{
    PIO_STACK_LOCATION sl = IoGetCurrentIrpStackLocation(irp);
    FX_DEVICE *d;
    FX_FILE *f = NULL;
    FX_REQUEST *r;
    KIRQL irql = fx_lock();
    d = device_of_locked(dev);
    fx_unlock(irql);
    if (d == NULL || !d->ready || d->queue == NULL || d->queue->ioctl == NULL) {
        return fx_fail(irp, STATUS_INVALID_DEVICE_STATE);
    }
    r = calloc(1, sizeof(*r));
    if (r == NULL) {
        return fx_fail(irp, STATUS_INSUFFICIENT_RESOURCES);
    }
    r->irp = irp;
    r->dev = d;
    r->queue = d->queue;
    r->state = RQ_DRIVER;
    r->out_len = sl->Parameters.DeviceIoControl.OutputBufferLength;
    r->in_len = sl->Parameters.DeviceIoControl.InputBufferLength;
    r->code = sl->Parameters.DeviceIoControl.IoControlCode;
    IoMarkIrpPending(irp);
    irql = fx_lock();
    if (d->has_fcfg) {
        f = file_of_locked(d, sl->FileObject);
    }
    if (!d->has_fcfg || f != NULL) {
        present_locked(r, f);
        if (d->queue->type == WdfIoQueueDispatchSequential) {
            if (d->queue->current != NULL) {
                /* KMDF: "The framework does not deliver the next request until the driver
                 * completes, cancels, or requeues the previous request." */
                InsertTailList(&d->queue->waiting, &r->qlink);
                InterlockedIncrement(&SequentialWaits);
                fx_unlock(irql);
                return STATUS_PENDING;
            }
            d->queue->current = r;
        }
    }
    fx_unlock(irql);
    if (d->has_fcfg && f == NULL) {
        /* Wine ignores a failed IRP_MJ_CREATE and keeps the handle; Windows would have no handle. */
        free(r);
        INFO("wdfldr: IOCTL on FILE_OBJECT %p whose create the driver failed: "
             "STATUS_INVALID_HANDLE",
             sl->FileObject);
        fx_fail(irp, STATUS_INVALID_HANDLE);
        return STATUS_PENDING; /* marked pending above */
    }
    r->presented = TRUE;
    r->since = h_KeQueryInterruptTimePrecise(NULL);
    present(d->queue, r);
    return STATUS_PENDING;
}

/* Presents the request that waited behind a sequential queue's current one (from a work item,
 * so that a driver completing inside EvtIoDeviceControl does not recurse). */
static void present_next(void *arg)
{
    FX_REQUEST *r = arg;
    FX_QUEUE *q = r->queue;
    perturb();
    r->presented = TRUE;
    r->since = h_KeQueryInterruptTimePrecise(NULL);
    present(q, r);
}

/* The driver is done with r as the sequential queue's current request (completed, forwarded or
 * requeued): the next one waiting becomes current. Called with the lock held; returns the
 * request to present once the lock is dropped. */
static FX_REQUEST *release_current_locked(FX_REQUEST *r)
{
    FX_QUEUE *q = r->dev != NULL ? r->dev->queue : NULL;
    FX_REQUEST *next;
    if (q == NULL || q->current != r) {
        return NULL;
    }
    q->current = NULL;
    if (IsListEmpty(&q->waiting)) {
        return NULL;
    }
    next = CONTAINING_RECORD(RemoveHeadList(&q->waiting), FX_REQUEST, qlink);
    q->current = next;
    return next;
}

static void timer_stop(FX_TIMER *t, BOOLEAN wait);

/* The framework's DriverUnload: EvtDriverUnload, then the objects the framework owns. */
static VOID NTAPI fx_unload(PDRIVER_OBJECT drv)
{
    ULONG i, k;
    (void)drv;
    /* Unload runs with every allocation granted: its leak check must see the driver's own. */
    InterlockedExchange(&Armed, 0);
    drain_deferred("before EvtDriverUnload");
    if (EvtUnload != NULL) {
        EvtUnload((WDFDRIVER)&Globals);
    }
    drain_deferred("after EvtDriverUnload");
    release_all_held();
    InterlockedExchange(&Unloading, 1);
    for (i = 0; i < sizeof(Timers) / sizeof(Timers[0]); i++) {
        if (Timers[i] != NULL) {
            timer_stop(Timers[i], TRUE);
            free(Timers[i]);
            Timers[i] = NULL;
            InterlockedDecrement(&WdfObjects);
        }
    }
    for (i = 0; i < sizeof(Spins) / sizeof(Spins[0]); i++) {
        if (Spins[i] != NULL) {
            free(Spins[i]);
            Spins[i] = NULL;
            InterlockedDecrement(&WdfObjects);
        }
    }
    /* Requests left parked: a finding; canceled here so that no application waits forever. */
    for (i = 0; i < MAX_DEVICES; i++) {
        for (k = 0; Devices[i] != NULL && k < MAX_MANUAL; k++) {
            FX_QUEUE *q = Devices[i]->manual[k];
            LIST_ENTRY left;
            ULONG n;
            KIRQL irql;
            if (q == NULL) {
                continue;
            }
            InitializeListHead(&left);
            irql = fx_lock();
            n = take_parked_locked(q, NULL, &left);
            fx_unlock(irql);
            if (n != 0) {
                FAIL("unload: %lu requests left in queue %p at unload (completed here with "
                     "STATUS_CANCELLED)",
                     n, q);
            }
            while (!IsListEmpty(&left)) {
                FX_REQUEST *r = CONTAINING_RECORD(RemoveHeadList(&left), FX_REQUEST, qlink);
                irql = fx_lock();
                r->state = RQ_DRIVER;
                fx_unlock(irql);
                complete_request("unload", (WDFREQUEST)r, STATUS_CANCELLED, 0);
            }
        }
    }
    drain_deferred("after the queues were emptied");
    for (i = 0; i < MAX_DEVICES; i++) {
        FX_DEVICE *d = Devices[i];
        PLIST_ENTRY e;
        if (d == NULL) {
            continue;
        }
        /* Left counted in WdfObjects, so that the unbind check reports them too. */
        for (e = d->files.Flink; e != &d->files; e = e->Flink) {
            FX_FILE *f = CONTAINING_RECORD(e, FX_FILE, link);
            FAIL("unload: file object %p (FILE_OBJECT %p) on device %lu never closed: "
                 "EvtFileClose not called, %ld requests live, close %s",
                 f, f->fo, i, f->outstanding, f->close_irp != NULL ? "pending" : "not received");
        }
        if (d->link_len != 0) {
            UNICODE_STRING link = {d->link_len, d->link_len, d->link};
            IoDeleteSymbolicLink(&link);
        }
        IoDeleteDevice(d->dev);
        if (Deferred != 0) {
            /* A cancel or close callback still queued (a FAIL above) may yet read the queues:
             * leave them allocated (and counted: the unbind check reports them). */
            continue;
        }
        free(d->queue);
        for (k = 0; k < MAX_MANUAL; k++) {
            if (d->manual[k] != NULL) {
                free(d->manual[k]);
                InterlockedDecrement(&WdfObjects);
            }
        }
        {
            KIRQL irql = fx_lock();
            Devices[i] = NULL;
            fx_unlock(irql);
        }
        free(d);
    }
    if (PendingRequests != 0) {
        FAIL("unload: %ld requests were never completed", PendingRequests);
    }
    INFO("wdfldr: %ld file objects opened, %ld requests forwarded to a manual queue, "
         "%ld canceled in a queue, %ld closes waited for requests, %ld late cancels of "
         "completed IRPs held off (Wine's race), %ld requests held back by a sequential queue, "
         "%ld held requests canceled",
         FilesOpened, RequestsForwarded, CanceledOnQueue, ClosesPended, StaleCancels,
         SequentialWaits, RequestCancels);
    INFO("wdfldr: verifier: %ld allocations failed on purpose, %ld framework points delayed",
         Injected, Perturbed);
}

/* ---- The implemented WDF functions ---- */
static NTSTATUS NTAPI w_DriverCreate(PWDF_DRIVER_GLOBALS g, PDRIVER_OBJECT drv,
                                     PCUNICODE_STRING reg, PWDF_OBJECT_ATTRIBUTES attrs,
                                     PWDF_DRIVER_CONFIG config, WDFDRIVER *out)
{
    (void)g;
    (void)reg;
    if (attrs != NULL) {
        check_size("WdfDriverCreate attributes", attrs->Size, sizeof(WDF_OBJECT_ATTRIBUTES));
    }
    check_size("WDF_DRIVER_CONFIG", config->Size, sizeof(WDF_DRIVER_CONFIG));
    if (!(config->DriverInitFlags & WdfDriverInitNonPnpDriver) || config->EvtDriverUnload == NULL) {
        FAIL("WdfDriverCreate: the harness supports a non-PnP driver with EvtDriverUnload only");
        return STATUS_NOT_SUPPORTED;
    }
    Driver = drv;
    EvtUnload = config->EvtDriverUnload;
    drv->DriverUnload = fx_unload;
    Globals.Driver = (WDFDRIVER)&Globals;
    Globals.DisplaceDriverUnload = TRUE;
    if (out != NULL) {
        *out = Globals.Driver;
    }
    return STATUS_SUCCESS;
}

static PWDFDEVICE_INIT NTAPI w_ControlDeviceInitAllocate(PWDF_DRIVER_GLOBALS g, WDFDRIVER d,
                                                         const UNICODE_STRING *sddl)
{
    FX_INIT *i;
    (void)g;
    (void)d;
    if (sddl == NULL || sddl->Length == 0) {
        FAIL("WdfControlDeviceInitAllocate: no SDDL string");
    }
    i = calloc(1, sizeof(FX_INIT));
    if (i != NULL) {
        InterlockedIncrement(&WdfObjects);
    }
    return (PWDFDEVICE_INIT)i;
}

static VOID NTAPI w_DeviceInitFree(PWDF_DRIVER_GLOBALS g, PWDFDEVICE_INIT init)
{
    (void)g;
    InterlockedDecrement(&WdfObjects);
    free(init);
}

static VOID NTAPI w_DeviceInitSetIoType(PWDF_DRIVER_GLOBALS g, PWDFDEVICE_INIT init,
                                        WDF_DEVICE_IO_TYPE type)
{
    (void)g;
    (void)init;
    if (type != WdfDeviceIoBuffered) {
        FAIL("WdfDeviceInitSetIoType: the harness supports buffered I/O only");
    }
}

static VOID NTAPI w_DeviceInitSetExclusive(PWDF_DRIVER_GLOBALS g, PWDFDEVICE_INIT init,
                                           BOOLEAN exclusive)
{
    (void)g;
    ((FX_INIT *)init)->exclusive = exclusive;
}

/* WdfDeviceInitSetFileObjectConfig (WDF-FACTS §1a.2-3): the configuration is copied; no file
 * object attributes (context, callbacks) are supported. */
static VOID NTAPI w_DeviceInitSetFileObjectConfig(PWDF_DRIVER_GLOBALS g, PWDFDEVICE_INIT init,
                                                  PWDF_FILEOBJECT_CONFIG config,
                                                  PWDF_OBJECT_ATTRIBUTES attrs)
{
    FX_INIT *i = (FX_INIT *)init;
    ULONG cls;
    (void)g;
    if (config == NULL) {
        FAIL("WdfDeviceInitSetFileObjectConfig: NULL configuration");
        return;
    }
    check_size("WDF_FILEOBJECT_CONFIG", config->Size, sizeof(WDF_FILEOBJECT_CONFIG));
    if (attrs != NULL) {
        check_size("WdfDeviceInitSetFileObjectConfig attributes", attrs->Size,
                   sizeof(WDF_OBJECT_ATTRIBUTES));
        if (attrs->ContextTypeInfo != NULL || attrs->ContextSizeOverride != 0 ||
            attrs->EvtCleanupCallback != NULL || attrs->EvtDestroyCallback != NULL) {
            FAIL("WdfDeviceInitSetFileObjectConfig: file object contexts and object callbacks "
                 "are not supported by the harness");
        }
    }
    cls = (ULONG)config->FileObjectClass & 0x7FFFFFFF; /* WdfFileObjectCanBeOptional is a flag */
    if (cls != WdfFileObjectWdfCanUseFsContext && cls != WdfFileObjectWdfCanUseFsContext2 &&
        cls != WdfFileObjectWdfCannotUseFsContexts) {
        FAIL("WdfDeviceInitSetFileObjectConfig: FileObjectClass %lu is not supported by the "
             "harness",
             cls);
    }
    if (config->AutoForwardCleanupClose != WdfFalse && config->AutoForwardCleanupClose != WdfTrue &&
        config->AutoForwardCleanupClose != WdfUseDefault) {
        FAIL("WdfDeviceInitSetFileObjectConfig: AutoForwardCleanupClose %d",
             (int)config->AutoForwardCleanupClose);
    }
    i->fcfg = *config;
    i->has_fcfg = TRUE;
}

static NTSTATUS NTAPI w_DeviceInitAssignName(PWDF_DRIVER_GLOBALS g, PWDFDEVICE_INIT init,
                                             PCUNICODE_STRING name)
{
    FX_INIT *i = (FX_INIT *)init;
    (void)g;
    if (name->Length > sizeof(i->name)) {
        return STATUS_NAME_TOO_LONG;
    }
    RtlCopyMemory(i->name, name->Buffer, name->Length);
    i->name_len = name->Length;
    return STATUS_SUCCESS;
}

static NTSTATUS NTAPI w_DeviceCreate(PWDF_DRIVER_GLOBALS g, PWDFDEVICE_INIT *init,
                                     PWDF_OBJECT_ATTRIBUTES attrs, WDFDEVICE *out)
{
    FX_INIT *i = (FX_INIT *)*init;
    FX_DEVICE *d;
    UNICODE_STRING name;
    NTSTATUS status;
    ULONG slot;
    KIRQL irql;
    (void)g;
    if (attrs != NULL) {
        check_size("WdfDeviceCreate attributes", attrs->Size, sizeof(WDF_OBJECT_ATTRIBUTES));
    }
    irql = fx_lock();
    for (slot = 0; slot < MAX_DEVICES && Devices[slot] != NULL; slot++) {
    }
    fx_unlock(irql);
    if (slot == MAX_DEVICES) {
        FAIL("WdfDeviceCreate: the harness supports %d control devices", MAX_DEVICES);
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    d = calloc(1, sizeof(*d));
    if (d == NULL) {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    name.Length = name.MaximumLength = i->name_len;
    name.Buffer = i->name;
    status = IoCreateDevice(Driver, 0, i->name_len ? &name : NULL, FILE_DEVICE_UNKNOWN, 0,
                            i->exclusive, &d->dev);
    if (!NT_SUCCESS(status)) {
        free(d);
        return status; /* the driver frees the init */
    }
    d->dev->Flags |= DO_BUFFERED_IO;
    RtlCopyMemory(d->name, i->name, i->name_len);
    d->name_len = i->name_len;
    d->has_fcfg = i->has_fcfg;
    d->fcfg = i->fcfg;
    InitializeListHead(&d->files);
    Driver->MajorFunction[IRP_MJ_CREATE] = fx_create;
    Driver->MajorFunction[IRP_MJ_CLOSE] = fx_close;
    Driver->MajorFunction[IRP_MJ_CLEANUP] = fx_cleanup;
    Driver->MajorFunction[IRP_MJ_DEVICE_CONTROL] = fx_ioctl;
    irql = fx_lock();
    Devices[slot] = d;
    fx_unlock(irql);
    free(i);
    InterlockedDecrement(&WdfObjects);
    *init = NULL; /* consumed (WdfDeviceCreate: DeviceInit is set to NULL on success) */
    *out = (WDFDEVICE)d;
    return STATUS_SUCCESS;
}

static NTSTATUS NTAPI w_DeviceCreateSymbolicLink(PWDF_DRIVER_GLOBALS g, WDFDEVICE device,
                                                 PCUNICODE_STRING link)
{
    FX_DEVICE *d = (FX_DEVICE *)device;
    UNICODE_STRING target;
    NTSTATUS status;
    (void)g;
    if (link->Length > sizeof(d->link)) {
        return STATUS_NAME_TOO_LONG;
    }
    RtlCopyMemory(d->link, link->Buffer, link->Length);
    d->link_len = link->Length;
    {
        UNICODE_STRING l = {d->link_len, d->link_len, d->link};
        target.Length = target.MaximumLength = d->name_len;
        target.Buffer = d->name;
        status = IoCreateSymbolicLink(&l, &target);
    }
    if (!NT_SUCCESS(status)) {
        d->link_len = 0;
    }
    return status;
}

/* A sequential default queue (EvtIoDeviceControl), or a non-default manual queue (requests
 * arrive only by WdfRequestForwardToIoQueue; EvtIoCanceledOnQueue). */
static NTSTATUS NTAPI w_IoQueueCreate(PWDF_DRIVER_GLOBALS g, WDFDEVICE device,
                                      PWDF_IO_QUEUE_CONFIG config, PWDF_OBJECT_ATTRIBUTES attrs,
                                      WDFQUEUE *out)
{
    FX_DEVICE *d = (FX_DEVICE *)device;
    FX_QUEUE *q;
    BOOLEAN known, manual;
    ULONG slot = MAX_MANUAL;
    KIRQL irql;
    (void)g;
    check_size("WDF_IO_QUEUE_CONFIG", config->Size, sizeof(WDF_IO_QUEUE_CONFIG));
    if (attrs != NULL) {
        check_size("WdfIoQueueCreate attributes", attrs->Size, sizeof(WDF_OBJECT_ATTRIBUTES));
    }
    irql = fx_lock();
    known = is_device_locked(d);
    fx_unlock(irql);
    if (!known) {
        FAIL("WdfIoQueueCreate: %p is not a device", device);
        return STATUS_INVALID_PARAMETER;
    }
    manual = !config->DefaultQueue && config->DispatchType == WdfIoQueueDispatchManual;
    if (!manual && (!config->DefaultQueue || (config->DispatchType != WdfIoQueueDispatchSequential &&
                                              config->DispatchType != WdfIoQueueDispatchParallel))) {
        FAIL("WdfIoQueueCreate: the harness supports a sequential or parallel default queue and "
             "manual non-default queues (DefaultQueue %u, DispatchType %d)",
             config->DefaultQueue, (int)config->DispatchType);
        return STATUS_NOT_SUPPORTED;
    }
    if (!manual && d->queue != NULL) {
        FAIL("WdfIoQueueCreate: a second default queue on device %p", device);
        return STATUS_NOT_SUPPORTED;
    }
    if (manual) {
        for (slot = 0; slot < MAX_MANUAL && d->manual[slot] != NULL; slot++) {
        }
        if (slot == MAX_MANUAL) {
            FAIL("WdfIoQueueCreate: more than %d manual queues on a device", MAX_MANUAL);
            return STATUS_INSUFFICIENT_RESOURCES;
        }
        if (config->EvtIoDefault != NULL || config->EvtIoDeviceControl != NULL) {
            INFO("wdfldr: manual queue with request handlers; the framework never calls them");
        }
    }
    q = calloc(1, sizeof(*q));
    if (q == NULL) {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    q->dev = d;
    q->type = config->DispatchType;
    q->ioctl = manual ? NULL : config->EvtIoDeviceControl;
    q->canceled = config->EvtIoCanceledOnQueue;
    InitializeListHead(&q->parked);
    InitializeListHead(&q->waiting);
    irql = fx_lock();
    if (manual) {
        d->manual[slot] = q;
    } else {
        d->queue = q;
    }
    fx_unlock(irql);
    if (manual) {
        InterlockedIncrement(&WdfObjects);
    }
    if (out != NULL) {
        *out = (WDFQUEUE)q;
    }
    return STATUS_SUCCESS;
}

static VOID NTAPI w_ControlFinishInitializing(PWDF_DRIVER_GLOBALS g, WDFDEVICE device)
{
    FX_DEVICE *d = (FX_DEVICE *)device;
    (void)g;
    d->dev->Flags &= ~DO_DEVICE_INITIALIZING;
    InterlockedExchange(&d->ready, 1);
    /* The end of DriverEntry: low-resources simulation starts (Verifier's waits for boot). */
    InterlockedExchange(&Armed, 1);
}

/* Completion by the driver (or by the framework's cancel): the request must be live and owned by
 * the driver. A create that fails deletes its file object without callbacks (KMDF). The close of
 * a file object waiting for its last request is finished from a work item. */
static void complete_request(const char *who, WDFREQUEST request, NTSTATUS status,
                             ULONG_PTR info)
{
    FX_REQUEST *r = (FX_REQUEST *)request;
    FX_DEVICE *d = NULL;
    FX_FILE *f = NULL, *drop = NULL, *fin = NULL;
    FX_QUEUE *queued_in = NULL;
    FX_REQUEST *next = NULL;
    BOOLEAN marked = FALSE;
    PVOID dead_file = NULL;
    PIRP irp = NULL;
    PIO_STACK_LOCATION sl = NULL;
    BOOLEAN seen = FALSE, after_close = FALSE;
    ULONG i;
    KIRQL irql;
    if (status == STATUS_PENDING) {
        FAIL("%s: request %p completed with STATUS_PENDING", who, request);
    }
    max_irql(who, DISPATCH_LEVEL);
    perturb();
    irql = fx_lock();
    if (!is_live_locked(r)) {
        for (i = 0; i < DEAD_RING; i++) {
            if (Dead[i].request == request) {
                seen = TRUE;
                dead_file = Dead[i].file;
                after_close = Dead[i].file_closed;
            }
        }
    } else if (r->state != RQ_DRIVER) {
        queued_in = r->queue;
    } else if (r->cancelable && !r->in_cancel) {
        marked = TRUE;
    } else {
        irp = r->irp;
        d = r->dev;
        f = r->file;
        sl = IoGetCurrentIrpStackLocation(irp);
        RemoveEntryList(&r->live);
        if (f != NULL) {
            f->outstanding--;
            if (sl->MajorFunction == IRP_MJ_CREATE) {
                if (NT_SUCCESS(status)) {
                    f->opened = TRUE;
                } else if (f->closing) {
                    f->failed = TRUE;
                } else {
                    RemoveEntryList(&f->link);
                    drop = f;
                }
            }
            if (drop == NULL && f->outstanding == 0 && f->close_irp != NULL && !f->finishing) {
                f->finishing = TRUE;
                fin = f;
            }
        }
        remember_dead_locked(r, drop != NULL ? NULL : f);
        next = release_current_locked(r);
    }
    fx_unlock(irql);
    if (next != NULL) {
        defer(next->dev, present_next, next);
    }
    if (irp == NULL) {
        if (marked) {
            FAIL("%s: request %p is marked cancelable: WdfRequestUnmarkCancelable first, or "
                 "complete it in its EvtRequestCancel",
                 who, request);
        } else if (queued_in != NULL) {
            FAIL("%s: request %p is in queue %p (forwarded, or being canceled): the framework "
                 "owns it",
                 who, request, queued_in);
        } else if (after_close) {
            FAIL("%s: request %p of file object %p completed after EvtFileClose (it had been "
                 "completed already)",
                 who, request, dead_file);
        } else if (seen) {
            FAIL("%s: request %p completed twice", who, request);
        } else {
            FAIL("%s: %p is not a live request (completed twice, or not a request)", who,
                 request);
        }
        return;
    }
    InterlockedDecrement(&PendingRequests);
    if (sl->MajorFunction == IRP_MJ_DEVICE_CONTROL && NT_SUCCESS(status) &&
        info > sl->Parameters.DeviceIoControl.OutputBufferLength) {
        FAIL("%s: %llu bytes reported for an output buffer of %lu", who,
             (unsigned long long)info, sl->Parameters.DeviceIoControl.OutputBufferLength);
    }
    irp->IoStatus.Status = status;
    irp->IoStatus.Information = info;
    if (r->in_cancel) {
        IoSetCancelRoutine(irp, NULL);
    }
    if (r->was_queued) {
        hold_after_completion(irp);
    }
    IoCompleteRequest(irp, IO_NO_INCREMENT);
    free(r);
    if (drop != NULL) {
        free(drop);
        InterlockedDecrement(&WdfObjects);
    }
    if (fin != NULL) {
        defer(d, finish_close_cb, fin);
    }
}

static VOID NTAPI w_RequestCompleteWithInformation(PWDF_DRIVER_GLOBALS g, WDFREQUEST request,
                                                   NTSTATUS status, ULONG_PTR info)
{
    (void)g;
    complete_request("WdfRequestCompleteWithInformation", request, status, info);
}

/* Parks a request the driver gives back in manual queue q (at its head for a requeue), cancelable
 * there; TRUE when it was canceled while the driver held it (the routine was not set then), so
 * that the caller cancels it now, unless IoCancelIrp is calling the routine at this very moment.
 * Under FxLock. */
static BOOLEAN park_locked(FX_REQUEST *r, FX_QUEUE *q, BOOLEAN head)
{
    r->state = RQ_QUEUED;
    r->was_queued = TRUE;
    if (head) {
        InsertHeadList(&q->parked, &r->qlink);
    } else {
        InsertTailList(&q->parked, &r->qlink);
    }
    IoSetCancelRoutine(r->irp, fx_cancel);
    if (r->irp->Cancel && IoSetCancelRoutine(r->irp, NULL) != NULL) {
        RemoveEntryList(&r->qlink);
        r->state = RQ_CANCELING;
        return TRUE;
    }
    return FALSE;
}

/* WdfRequestForwardToIoQueue (WDF-FACTS §1a.4): only a request the driver owns, to another
 * queue of the same device; STATUS_INVALID_DEVICE_REQUEST otherwise (the driver still owns it).
 * The request becomes cancelable in the queue; one already canceled goes straight to
 * EvtIoCanceledOnQueue. */
static NTSTATUS NTAPI w_RequestForwardToIoQueue(PWDF_DRIVER_GLOBALS g, WDFREQUEST request,
                                                WDFQUEUE queue)
{
    FX_REQUEST *r = (FX_REQUEST *)request;
    FX_QUEUE *q = (FX_QUEUE *)queue;
    FX_DEVICE *d = NULL;
    const char *why = NULL;
    BOOLEAN cancel_now = FALSE;
    FX_REQUEST *next = NULL;
    KIRQL irql;
    (void)g;
    max_irql("WdfRequestForwardToIoQueue", DISPATCH_LEVEL);
    perturb();
    irql = fx_lock();
    if (!is_live_locked(r)) {
        why = "not a live request (already completed?)";
    } else if (!is_queue_locked(q)) {
        why = "not a queue";
    } else if (r->state != RQ_DRIVER) {
        why = "the request is already in a queue (forwarded twice?)";
    } else if (r->cancelable) {
        why = "the request is marked cancelable (WdfRequestUnmarkCancelable first)";
    } else if (q->dev != r->dev) {
        why = "the queue belongs to another device";
    } else if (q == r->queue) {
        why = "the queue is the request's current queue";
    } else if (q->type != WdfIoQueueDispatchManual) {
        why = "the harness forwards to manual queues only";
    } else {
        d = r->dev;
        /* Forwarding releases a sequential queue ("Requeuing I/O Requests"). */
        next = release_current_locked(r);
        r->queue = q;
        cancel_now = park_locked(r, q, FALSE);
    }
    fx_unlock(irql);
    if (why != NULL) {
        FAIL("WdfRequestForwardToIoQueue: request %p to queue %p: %s", request, queue, why);
        return STATUS_INVALID_DEVICE_REQUEST;
    }
    InterlockedIncrement(&RequestsForwarded);
    if (next != NULL) {
        defer(d, present_next, next);
    }
    if (cancel_now) {
        defer(d, deliver_canceled, r);
    }
    return STATUS_SUCCESS;
}

/* WdfRequestMarkCancelableEx / WdfRequestUnmarkCancelable (WDF-FACTS §1a): a request the driver
 * holds becomes cancelable; IoCancelIrp (an application's CancelIo, or its exit) then calls the
 * driver's EvtRequestCancel, from a work item as for parked requests (Wine holds its own lock
 * inside IoCancelIrp). */
static void deliver_request_cancel(void *arg)
{
    FX_REQUEST *r = arg;
    perturb();
    InterlockedIncrement(&RequestCancels);
    r->cancel_fn((WDFREQUEST)r);
}

static VOID NTAPI fx_request_cancel(PDEVICE_OBJECT dev, PIRP irp)
{
    FX_REQUEST *found = NULL;
    PLIST_ENTRY e;
    KIRQL irql;
    (void)dev;
    IoReleaseCancelSpinLock(irp->CancelIrql);
    irql = fx_lock();
    for (e = LiveRequests.Flink; e != &LiveRequests; e = e->Flink) {
        FX_REQUEST *r = CONTAINING_RECORD(e, FX_REQUEST, live);
        if (r->irp == irp && r->cancelable) {
            r->in_cancel = TRUE;
            found = r;
            break;
        }
    }
    fx_unlock(irql);
    if (found == NULL) {
        FAIL("IoCancelIrp: IRP %p has the request cancel routine but no cancelable request", irp);
        return;
    }
    defer(found->dev, deliver_request_cancel, found);
}

static NTSTATUS NTAPI w_RequestMarkCancelableEx(PWDF_DRIVER_GLOBALS g, WDFREQUEST request,
                                                PFN_WDF_REQUEST_CANCEL cancel)
{
    FX_REQUEST *r = (FX_REQUEST *)request;
    const char *why = NULL;
    NTSTATUS status = STATUS_SUCCESS;
    KIRQL irql;
    (void)g;
    irql = fx_lock();
    if (!is_live_locked(r)) {
        why = "not a live request";
    } else if (r->state != RQ_DRIVER) {
        why = "the request is in a queue: the framework owns it";
    } else if (r->cancelable) {
        why = "already marked cancelable";
    } else if (cancel == NULL) {
        why = "no EvtRequestCancel";
    } else {
        r->cancel_fn = cancel;
        r->cancelable = TRUE;
        r->was_queued = TRUE; /* its IRP is held after completion (Wine's cancel race) */
        IoSetCancelRoutine(r->irp, fx_request_cancel);
        if (r->irp->Cancel && IoSetCancelRoutine(r->irp, NULL) != NULL) {
            /* Canceled already: Ex returns STATUS_CANCELLED and calls nothing. */
            r->cancelable = FALSE;
            status = STATUS_CANCELLED;
        }
    }
    fx_unlock(irql);
    if (why != NULL) {
        FAIL("WdfRequestMarkCancelableEx: request %p: %s", request, why);
        return STATUS_INVALID_DEVICE_REQUEST;
    }
    return status;
}

static NTSTATUS NTAPI w_RequestUnmarkCancelable(PWDF_DRIVER_GLOBALS g, WDFREQUEST request)
{
    FX_REQUEST *r = (FX_REQUEST *)request;
    const char *why = NULL;
    NTSTATUS status = STATUS_SUCCESS;
    KIRQL irql;
    (void)g;
    irql = fx_lock();
    if (!is_live_locked(r)) {
        why = "not a live request (completed by its EvtRequestCancel already?)";
    } else if (!r->cancelable) {
        why = "not marked cancelable";
    } else if (r->in_cancel || IoSetCancelRoutine(r->irp, NULL) == NULL) {
        /* The cancel routine runs or ran: EvtRequestCancel completes it. */
        status = STATUS_CANCELLED;
    } else {
        r->cancelable = FALSE;
    }
    fx_unlock(irql);
    if (why != NULL) {
        FAIL("WdfRequestUnmarkCancelable: request %p: %s", request, why);
        return STATUS_INVALID_DEVICE_REQUEST;
    }
    return status;
}

/* The ownership watch (the WDF timer's thread calls it each tick): a request the driver has
 * owned for longer than OWNED_BOUND_S and that nothing can cancel is a FAIL, once. KMDF presents
 * no further request of a sequential queue meanwhile, and its application cannot CancelIo it
 * or exit (issue #22, defect 1). Parked and cancelable requests are exempt. */
#define OWNED_BOUND_S 5
static void watch_ownership(void)
{
    ULONG64 now = h_KeQueryInterruptTimePrecise(NULL);
    PLIST_ENTRY e;
    FX_REQUEST *late[8];
    ULONG64 held[8];
    ULONG n = 0, i;
    KIRQL irql = fx_lock();
    for (e = LiveRequests.Flink; e != &LiveRequests && n < 8; e = e->Flink) {
        FX_REQUEST *r = CONTAINING_RECORD(e, FX_REQUEST, live);
        if (r->state == RQ_DRIVER && r->presented && !r->cancelable && !r->overdue &&
            now - r->since > (ULONG64)OWNED_BOUND_S * 10000000) {
            r->overdue = TRUE;
            late[n] = r;
            held[n] = (now - r->since) / 10000;
            n++;
        }
    }
    fx_unlock(irql);
    for (i = 0; i < n; i++) {
        FAIL("request %p (IOCTL %#lx) owned by the driver for %llu ms and not cancelable",
             late[i], late[i]->code, (unsigned long long)held[i]);
    }
}

/* run.sh --low-resources: once the suite has run, it creates C:\khttp-harness\disarm; at the
 * next tick the failures stop, so that it can run the tests that failed again against the same
 * driver, still loaded: each must pass, or its failure was not the injection's. */
static void maybe_disarm(void)
{
    if (Armed && FailPermille != 0 &&
        GetFileAttributesA("C:\\khttp-harness\\disarm") != 0xFFFFFFFFUL) {
        InterlockedExchange(&Armed, 0);
        INFO("wdfldr: allocation failures disarmed after %ld", Injected);
    }
}

/* WdfRequestRequeue (WDF docs: back to the head of the queue it was delivered from; manual
 * queues only, STATUS_INVALID_DEVICE_REQUEST otherwise): a request retrieved from a manual queue
 * goes back to its head, cancelable again. */
static NTSTATUS NTAPI w_RequestRequeue(PWDF_DRIVER_GLOBALS g, WDFREQUEST request)
{
    FX_REQUEST *r = (FX_REQUEST *)request;
    FX_QUEUE *q = NULL;
    FX_DEVICE *d = NULL;
    const char *why = NULL;
    BOOLEAN cancel_now = FALSE;
    KIRQL irql;
    (void)g;
    max_irql("WdfRequestRequeue", DISPATCH_LEVEL);
    perturb();
    irql = fx_lock();
    if (!is_live_locked(r)) {
        why = "not a live request (already completed?)";
    } else if (r->state != RQ_DRIVER) {
        why = "the request is in a queue: the framework owns it";
    } else if (r->queue == NULL || r->queue->type != WdfIoQueueDispatchManual) {
        why = "it was not delivered from a manual queue";
    } else {
        q = r->queue;
        d = r->dev;
        cancel_now = park_locked(r, q, TRUE);
    }
    fx_unlock(irql);
    if (why != NULL) {
        FAIL("WdfRequestRequeue: request %p: %s", request, why);
        return STATUS_INVALID_DEVICE_REQUEST;
    }
    if (cancel_now) {
        defer(d, deliver_canceled, r);
    }
    return STATUS_SUCCESS;
}

/* WdfIoQueueRetrieveNextRequest / WdfIoQueueRetrieveRequestByFileObject: the oldest parked
 * request (of the file object) whose cancel routine could be cleared; the driver owns it. */
static NTSTATUS retrieve_parked(const char *who, WDFQUEUE queue, FX_FILE *f, BOOLEAN by_file,
                                WDFREQUEST *out)
{
    FX_QUEUE *q = (FX_QUEUE *)queue;
    FX_REQUEST *found = NULL;
    const char *why = NULL;
    PLIST_ENTRY e;
    KIRQL irql;
    max_irql(who, DISPATCH_LEVEL);
    if (out == NULL) {
        FAIL("%s: NULL OutRequest", who);
        return STATUS_INVALID_PARAMETER;
    }
    *out = NULL;
    perturb();
    irql = fx_lock();
    if (!is_queue_locked(q)) {
        why = "not a queue";
    } else if (by_file && !is_file_locked(f)) {
        why = "not a file object (NULL, or used after its EvtFileClose)";
    } else if (by_file && f->dev != q->dev) {
        why = "a file object of another device";
    } else {
        for (e = q->parked.Flink; e != &q->parked; e = e->Flink) {
            FX_REQUEST *r = CONTAINING_RECORD(e, FX_REQUEST, qlink);
            if (by_file && r->file != f) {
                continue;
            }
            if (IoSetCancelRoutine(r->irp, NULL) == NULL) {
                continue; /* IoCancelIrp has it: its cancel routine removes it */
            }
            RemoveEntryList(e);
            r->state = RQ_DRIVER;
            r->since = h_KeQueryInterruptTimePrecise(NULL);
            r->overdue = FALSE;
            found = r;
            break;
        }
    }
    fx_unlock(irql);
    if (why != NULL) {
        FAIL("%s: queue %p, file object %p: %s", who, queue, f, why);
        return STATUS_INVALID_PARAMETER;
    }
    if (found == NULL) {
        return STATUS_NO_MORE_ENTRIES;
    }
    *out = (WDFREQUEST)found;
    return STATUS_SUCCESS;
}

static NTSTATUS NTAPI w_IoQueueRetrieveNextRequest(PWDF_DRIVER_GLOBALS g, WDFQUEUE queue,
                                                   WDFREQUEST *out)
{
    (void)g;
    return retrieve_parked("WdfIoQueueRetrieveNextRequest", queue, NULL, FALSE, out);
}

static NTSTATUS NTAPI w_IoQueueRetrieveRequestByFileObject(PWDF_DRIVER_GLOBALS g,
                                                           WDFQUEUE queue, WDFFILEOBJECT file,
                                                           WDFREQUEST *out)
{
    (void)g;
    return retrieve_parked("WdfIoQueueRetrieveRequestByFileObject", queue, (FX_FILE *)file, TRUE,
                           out);
}

/* WdfRequestGetFileObject: the request's WDFFILEOBJECT, NULL on a device without one. */
static WDFFILEOBJECT NTAPI w_RequestGetFileObject(PWDF_DRIVER_GLOBALS g, WDFREQUEST request)
{
    FX_REQUEST *r = (FX_REQUEST *)request;
    FX_FILE *f = NULL;
    BOOLEAN live;
    KIRQL irql;
    (void)g;
    irql = fx_lock();
    live = is_live_locked(r);
    if (live) {
        f = r->file;
    }
    fx_unlock(irql);
    if (!live) {
        FAIL("WdfRequestGetFileObject: %p is not a live request (completed already?)", request);
    }
    return (WDFFILEOBJECT)f;
}

static NTSTATUS retrieve(const char *who, WDFREQUEST request, size_t min, PVOID *buffer,
                         size_t *length, int out)
{
    FX_REQUEST *r = (FX_REQUEST *)request;
    PIRP irp = NULL;
    PIO_STACK_LOCATION sl;
    size_t have;
    int state = 0;
    KIRQL irql;
    if (buffer == NULL) {
        return STATUS_INVALID_PARAMETER;
    }
    *buffer = NULL;
    if (length != NULL) {
        *length = 0;
    }
    irql = fx_lock();
    if (is_live_locked(r)) {
        irp = r->irp;
        state = r->state;
    }
    fx_unlock(irql);
    if (irp == NULL) {
        FAIL("%s: %p is not a live request (completed already?)", who, request);
        return STATUS_INVALID_PARAMETER;
    }
    if (state != RQ_DRIVER) {
        FAIL("%s: request %p is in a queue: the driver does not own it", who, request);
        return STATUS_INVALID_DEVICE_REQUEST;
    }
    sl = IoGetCurrentIrpStackLocation(irp);
    if (sl->MajorFunction != IRP_MJ_DEVICE_CONTROL) {
        return STATUS_INVALID_DEVICE_REQUEST; /* a create request has no buffers */
    }
    have = out ? sl->Parameters.DeviceIoControl.OutputBufferLength
               : sl->Parameters.DeviceIoControl.InputBufferLength;
    /* KMDF: STATUS_BUFFER_TOO_SMALL when the buffer is shorter than the minimum or empty. */
    if (have == 0 || have < min) {
        return STATUS_BUFFER_TOO_SMALL;
    }
    switch (sl->Parameters.DeviceIoControl.IoControlCode & 3) {
    case METHOD_BUFFERED:
        *buffer = irp->AssociatedIrp.SystemBuffer;
        break;
    case METHOD_IN_DIRECT:
    case METHOD_OUT_DIRECT:
        /* Direct I/O: the input is buffered; the output is the MDL's system address. */
        if (out) {
            if (irp->MdlAddress == NULL || irp->MdlAddress->MappedSystemVa == NULL) {
                FAIL("%s: a direct-I/O request without a mapped MDL", who);
                return STATUS_INSUFFICIENT_RESOURCES;
            }
            *buffer = irp->MdlAddress->MappedSystemVa;
        } else {
            *buffer = irp->AssociatedIrp.SystemBuffer;
        }
        break;
    default:
        return STATUS_INVALID_DEVICE_REQUEST; /* METHOD_NEITHER has no WDF buffers */
    }
    if (length != NULL) {
        *length = have;
    }
    return STATUS_SUCCESS;
}

static NTSTATUS NTAPI w_RequestRetrieveInputBuffer(PWDF_DRIVER_GLOBALS g, WDFREQUEST r,
                                                   size_t min, PVOID *b, size_t *l)
{
    (void)g;
    return retrieve("WdfRequestRetrieveInputBuffer", r, min, b, l, 0);
}

static NTSTATUS NTAPI w_RequestRetrieveOutputBuffer(PWDF_DRIVER_GLOBALS g, WDFREQUEST r,
                                                    size_t min, PVOID *b, size_t *l)
{
    (void)g;
    return retrieve("WdfRequestRetrieveOutputBuffer", r, min, b, l, 1);
}

static NTSTATUS NTAPI w_SpinLockCreate(PWDF_DRIVER_GLOBALS g, PWDF_OBJECT_ATTRIBUTES attrs,
                                       WDFSPINLOCK *out)
{
    ULONG i;
    (void)g;
    if (attrs != NULL) {
        check_size("WdfSpinLockCreate attributes", attrs->Size, sizeof(WDF_OBJECT_ATTRIBUTES));
    }
    for (i = 0; i < sizeof(Spins) / sizeof(Spins[0]); i++) {
        if (Spins[i] == NULL) {
            FX_SPIN *s = calloc(1, sizeof(*s));
            if (s == NULL) {
                return STATUS_INSUFFICIENT_RESOURCES;
            }
            KeInitializeSpinLock(&s->lock);
            Spins[i] = s;
            InterlockedIncrement(&WdfObjects);
            *out = (WDFSPINLOCK)s;
            return STATUS_SUCCESS;
        }
    }
    FAIL("WdfSpinLockCreate: more spin locks than the harness holds");
    return STATUS_INSUFFICIENT_RESOURCES;
}

static VOID NTAPI w_SpinLockAcquire(PWDF_DRIVER_GLOBALS g, WDFSPINLOCK lock)
{
    FX_SPIN *s = (FX_SPIN *)lock;
    KIRQL irql, model;
    (void)g;
    max_irql("WdfSpinLockAcquire", DISPATCH_LEVEL);
    model = KhttpHarnessRaise();
    KeAcquireSpinLock(&s->lock, &irql);
    s->irql = irql;
    s->model = model;
    lock_taken(s, "WdfSpinLockAcquire");
}

static VOID NTAPI w_SpinLockRelease(PWDF_DRIVER_GLOBALS g, WDFSPINLOCK lock)
{
    FX_SPIN *s = (FX_SPIN *)lock;
    KIRQL model = s->model;
    (void)g;
    lock_released(s);
    KeReleaseSpinLock(&s->lock, s->irql);
    KhttpHarnessLower(model);
}

/* A WDF timer as a system thread: Wine's KeSetTimerEx DPCs work too, but a thread makes
 * WdfTimerStop(Wait = TRUE) exact (it joins). */
static VOID NTAPI timer_thread(PVOID ctx)
{
    FX_TIMER *t = ctx;
    LARGE_INTEGER wait;
    wait.QuadPart = t->due;
    t->owner = PsGetCurrentThreadId();
    for (;;) {
        if (KeWaitForSingleObject(&t->stop, Executive, KernelMode, FALSE, &wait) ==
            STATUS_SUCCESS) {
            break;
        }
        watch_ownership();
        maybe_disarm();
        {
            /* A WDF timer's callback is a DPC: DISPATCH_LEVEL. */
            KIRQL old = KhttpHarnessRaise();
            t->fn((WDFTIMER)t);
            KhttpHarnessLower(old);
        }
        if (t->period_ms == 0) {
            break;
        }
        wait.QuadPart = -(LONG64)t->period_ms * 10000;
    }
    InterlockedExchange(&t->running, 0);
    PsTerminateSystemThread(STATUS_SUCCESS);
}

static NTSTATUS NTAPI w_TimerCreate(PWDF_DRIVER_GLOBALS g, PWDF_TIMER_CONFIG config,
                                    PWDF_OBJECT_ATTRIBUTES attrs, WDFTIMER *out)
{
    ULONG i;
    (void)g;
    check_size("WDF_TIMER_CONFIG", config->Size, sizeof(WDF_TIMER_CONFIG));
    if (attrs == NULL || attrs->ParentObject == NULL) {
        FAIL("WdfTimerCreate: a timer needs a parent object");
        return STATUS_INVALID_PARAMETER;
    }
    check_size("WdfTimerCreate attributes", attrs->Size, sizeof(WDF_OBJECT_ATTRIBUTES));
    for (i = 0; i < sizeof(Timers) / sizeof(Timers[0]); i++) {
        if (Timers[i] == NULL) {
            FX_TIMER *t = calloc(1, sizeof(*t));
            if (t == NULL) {
                return STATUS_INSUFFICIENT_RESOURCES;
            }
            t->fn = config->EvtTimerFunc;
            t->period_ms = config->Period;
            KeInitializeEvent(&t->stop, NotificationEvent, FALSE);
            Timers[i] = t;
            InterlockedIncrement(&WdfObjects);
            *out = (WDFTIMER)t;
            return STATUS_SUCCESS;
        }
    }
    return STATUS_INSUFFICIENT_RESOURCES;
}

static BOOLEAN NTAPI w_TimerStart(PWDF_DRIVER_GLOBALS g, WDFTIMER timer, LONGLONG due)
{
    FX_TIMER *t = (FX_TIMER *)timer;
    NTSTATUS status;
    (void)g;
    if (InterlockedExchange(&t->running, 1)) {
        FAIL("WdfTimerStart: the harness does not restart a running timer");
        return TRUE;
    }
    t->due = due;
    KeClearEvent(&t->stop);
    status = PsCreateSystemThread(&t->thread, THREAD_ALL_ACCESS, NULL, NULL, NULL, timer_thread,
                                  t);
    if (!NT_SUCCESS(status)) {
        InterlockedExchange(&t->running, 0);
        FAIL("WdfTimerStart: PsCreateSystemThread %#lx", status);
    }
    return FALSE;
}

static void timer_stop(FX_TIMER *t, BOOLEAN wait)
{
    if (t->thread == NULL) {
        return;
    }
    KeSetEvent(&t->stop, IO_NO_INCREMENT, FALSE);
    if (wait) {
        if (t->owner == PsGetCurrentThreadId()) {
            FAIL("WdfTimerStop: Wait = TRUE from the timer's own callback");
        } else {
            ZwWaitForSingleObject(t->thread, FALSE, NULL);
        }
    }
    ZwClose(t->thread);
    t->thread = NULL;
}

static BOOLEAN NTAPI w_TimerStop(PWDF_DRIVER_GLOBALS g, WDFTIMER timer, BOOLEAN wait)
{
    FX_TIMER *t = (FX_TIMER *)timer;
    BOOLEAN was = t->running != 0;
    (void)g;
    timer_stop(t, wait);
    return was;
}

/* ---- The function table ---- */
static void unimplemented(ULONG index)
{
    FAIL("WDF function table entry %lu is not implemented by the harness", index);
    KeBugCheckEx(0x4B485450 /* 'KHTP' */, index, 0, 0, 0);
}

#define U1(h, t, o) \
    static VOID NTAPI unimpl_##h##t##o(VOID) { unimplemented(h * 100 + t * 10 + o); }
#define U10(h, t) \
    U1(h, t, 0) U1(h, t, 1) U1(h, t, 2) U1(h, t, 3) U1(h, t, 4) \
    U1(h, t, 5) U1(h, t, 6) U1(h, t, 7) U1(h, t, 8) U1(h, t, 9)
#define U100(h) \
    U10(h, 0) U10(h, 1) U10(h, 2) U10(h, 3) U10(h, 4) \
    U10(h, 5) U10(h, 6) U10(h, 7) U10(h, 8) U10(h, 9)
U100(0) U100(1) U100(2) U100(3)
U10(4, 0) U10(4, 1) U10(4, 2) U10(4, 3) U10(4, 4)
U1(4, 5, 0) U1(4, 5, 1) U1(4, 5, 2) U1(4, 5, 3) U1(4, 5, 4) U1(4, 5, 5) U1(4, 5, 6) U1(4, 5, 7)

#define E1(h, t, o) (WDFFUNC)unimpl_##h##t##o,
#define E10(h, t) \
    E1(h, t, 0) E1(h, t, 1) E1(h, t, 2) E1(h, t, 3) E1(h, t, 4) \
    E1(h, t, 5) E1(h, t, 6) E1(h, t, 7) E1(h, t, 8) E1(h, t, 9)
#define E100(h) \
    E10(h, 0) E10(h, 1) E10(h, 2) E10(h, 3) E10(h, 4) \
    E10(h, 5) E10(h, 6) E10(h, 7) E10(h, 8) E10(h, 9)

static WDFFUNC Table[WdfFunctionTableNumEntries] = {
    E100(0) E100(1) E100(2) E100(3)
    E10(4, 0) E10(4, 1) E10(4, 2) E10(4, 3) E10(4, 4)
    E1(4, 5, 0) E1(4, 5, 1) E1(4, 5, 2) E1(4, 5, 3) E1(4, 5, 4) E1(4, 5, 5) E1(4, 5, 6)
    E1(4, 5, 7)
};

static void fill_table(void)
{
    Table[WdfControlDeviceInitAllocateTableIndex] = (WDFFUNC)w_ControlDeviceInitAllocate;
    Table[WdfControlFinishInitializingTableIndex] = (WDFFUNC)w_ControlFinishInitializing;
    Table[WdfDeviceInitFreeTableIndex] = (WDFFUNC)w_DeviceInitFree;
    Table[WdfDeviceInitSetIoTypeTableIndex] = (WDFFUNC)w_DeviceInitSetIoType;
    Table[WdfDeviceInitSetExclusiveTableIndex] = (WDFFUNC)w_DeviceInitSetExclusive;
    Table[WdfDeviceInitAssignNameTableIndex] = (WDFFUNC)w_DeviceInitAssignName;
    Table[WdfDeviceInitSetFileObjectConfigTableIndex] = (WDFFUNC)w_DeviceInitSetFileObjectConfig;
    Table[WdfDeviceCreateTableIndex] = (WDFFUNC)w_DeviceCreate;
    Table[WdfDeviceCreateSymbolicLinkTableIndex] = (WDFFUNC)w_DeviceCreateSymbolicLink;
    Table[WdfDriverCreateTableIndex] = (WDFFUNC)w_DriverCreate;
    Table[WdfIoQueueCreateTableIndex] = (WDFFUNC)w_IoQueueCreate;
    Table[WdfIoQueueRetrieveNextRequestTableIndex] = (WDFFUNC)w_IoQueueRetrieveNextRequest;
    Table[WdfIoQueueRetrieveRequestByFileObjectTableIndex] =
        (WDFFUNC)w_IoQueueRetrieveRequestByFileObject;
    Table[WdfRequestCompleteWithInformationTableIndex] = (WDFFUNC)w_RequestCompleteWithInformation;
    Table[WdfRequestRetrieveInputBufferTableIndex] = (WDFFUNC)w_RequestRetrieveInputBuffer;
    Table[WdfRequestRetrieveOutputBufferTableIndex] = (WDFFUNC)w_RequestRetrieveOutputBuffer;
    Table[WdfRequestGetFileObjectTableIndex] = (WDFFUNC)w_RequestGetFileObject;
    Table[WdfRequestForwardToIoQueueTableIndex] = (WDFFUNC)w_RequestForwardToIoQueue;
    Table[WdfRequestRequeueTableIndex] = (WDFFUNC)w_RequestRequeue;
    Table[WdfRequestMarkCancelableExTableIndex] = (WDFFUNC)w_RequestMarkCancelableEx;
    Table[WdfRequestUnmarkCancelableTableIndex] = (WDFFUNC)w_RequestUnmarkCancelable;
    Table[WdfSpinLockCreateTableIndex] = (WDFFUNC)w_SpinLockCreate;
    Table[WdfSpinLockAcquireTableIndex] = (WDFFUNC)w_SpinLockAcquire;
    Table[WdfSpinLockReleaseTableIndex] = (WDFFUNC)w_SpinLockRelease;
    Table[WdfTimerCreateTableIndex] = (WDFFUNC)w_TimerCreate;
    Table[WdfTimerStartTableIndex] = (WDFFUNC)w_TimerStart;
    Table[WdfTimerStopTableIndex] = (WDFFUNC)w_TimerStop;
}

/* ---- The loader exports (WDF-FACTS §4.2; the bind-info layout as in driver/linux/stub) ---- */
typedef struct {
    ULONG Size;
    PWCHAR Component;
    ULONG Major, Minor, Build;
    ULONG FuncCount;
    WDFFUNC **FuncTable;
    PVOID Module;
} BIND_INFO_;

__declspec(dllexport) NTSTATUS NTAPI WdfVersionBind(PDRIVER_OBJECT drv, PUNICODE_STRING reg,
                                                    BIND_INFO_ *info, PVOID *globals)
{
    (void)reg;
    find_netio();
    verifier_init();
    if (info == NULL || globals == NULL || info->FuncTable == NULL) {
        FAIL("WdfVersionBind: NULL argument");
        return STATUS_INVALID_PARAMETER;
    }
    if (info->Major != 1 || info->Minor != 33 || info->FuncCount != WdfFunctionTableNumEntries) {
        FAIL("WdfVersionBind: KMDF %lu.%lu with %lu functions; the harness is 1.33 with %d",
             info->Major, info->Minor, info->FuncCount, WdfFunctionTableNumEntries);
        return STATUS_NOT_SUPPORTED;
    }
    ImageStart = (PUCHAR)drv->DriverStart;
    ImageSize = drv->DriverSize;
    patch_imports((PUCHAR)drv->DriverStart);
    KeInitializeSpinLock(&FxLock);
    fill_table();
    RtlZeroMemory(&Globals, sizeof(Globals));
    RtlCopyMemory(Globals.DriverName, "khttp", 6);
    *info->FuncTable = Table;
    *globals = &Globals;
    INFO("wdfldr: bound KMDF 1.33");
    return STATUS_SUCCESS;
}

__declspec(dllexport) NTSTATUS NTAPI WdfVersionUnbind(PUNICODE_STRING reg, BIND_INFO_ *info,
                                                      PVOID globals)
{
    ULONG sockets = 0, irps = 0, captured = 0;
    int clean = 1;
    (void)reg;
    (void)info;
    (void)globals;
    if (NetioOutstanding != NULL) {
        NetioOutstanding(&sockets, &irps, &captured);
    }
    if (PoolCount != 0) {
        FAIL("unload: %ld pool allocations (%lld bytes) still outstanding", PoolCount,
             (long long)PoolBytes);
        clean = 0;
    }
    if (IrpCount != 0) {
        FAIL("unload: %ld IRPs never freed", IrpCount);
        clean = 0;
    }
    if (MdlCount != 0) {
        FAIL("unload: %ld MDLs never freed", MdlCount);
        clean = 0;
    }
    if (sockets != 0 || irps != 0 || captured != 0) {
        FAIL("unload: %lu sockets open, %lu IRPs pending in WSK, %lu NPI captures held", sockets,
             irps, captured);
        clean = 0;
    }
    if (WdfObjects != 0) {
        FAIL("unload: %ld WDF objects left", WdfObjects);
        clean = 0;
    }
    if (ExPending != 0) {
        FAIL("unload: %ld IoSetCompletionRoutineEx contexts never ran (an IRP prepared but never "
             "sent: the kernel leaks them, and the driver stays referenced)", ExPending);
        clean = 0;
    }
    if (clean) {
        INFO("unload: clean (pool, IRPs, MDLs, sockets, NPI, WDF objects all released)");
    }
    return STATUS_SUCCESS;
}
