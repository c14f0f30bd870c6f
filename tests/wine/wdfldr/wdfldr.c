/*
 * TEST HARNESS ONLY. A WdfLdr.sys stand-in that lets khttp.sys run under Wine, which has no KMDF.
 *
 * Written by the khttp project. It implements, on WDM, exactly the KMDF 1.33 functions that
 * khttp.sys and the `wdk` crate call (the indices in driver/linux/include/wdf.h, sourced in
 * driver/linux/WDF-FACTS.md); every other entry of the 458-entry table logs a FAIL naming its
 * index and bugchecks. It is C rather than Rust because it is all WDM structure plumbing
 * (DRIVER_OBJECT, IRP stack locations, MDLs) that mingw-w64's DDK headers describe.
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
    if (size > ((SIZE_T)1 << 40)) {
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
    PIRP irp = IoAllocateIrp(stack, charge);
    if (irp != NULL) {
        InterlockedIncrement(&IrpCount);
    }
    return irp;
}

static VOID NTAPI h_IoFreeIrp(PIRP irp)
{
    if (IrpBusy != NULL && IrpBusy(irp)) {
        FAIL("IoFreeIrp: IRP %p freed while still pending in the WSK provider", irp);
        return; /* leak rather than let the provider complete freed memory */
    }
    InterlockedDecrement(&IrpCount);
    IoFreeIrp(irp);
}

static VOID NTAPI h_IoReuseIrp(PIRP irp, NTSTATUS status)
{
    if (IrpBusy != NULL && IrpBusy(irp)) {
        FAIL("IoReuseIrp: IRP %p reused while still pending in the WSK provider", irp);
    }
    IoReuseIrp(irp, status);
}

static PMDL NTAPI h_IoAllocateMdl(PVOID va, ULONG length, BOOLEAN secondary, BOOLEAN charge,
                                  PIRP irp)
{
    PMDL mdl = IoAllocateMdl(va, length, secondary, charge, irp);
    if (mdl != NULL) {
        InterlockedIncrement(&MdlCount);
    }
    return mdl;
}

static VOID NTAPI h_IoFreeMdl(PMDL mdl)
{
    if (MdlBusy != NULL && MdlBusy(mdl)) {
        FAIL("IoFreeMdl: MDL %p freed while its IRP is still pending in the WSK provider", mdl);
        return;
    }
    InterlockedDecrement(&MdlCount);
    IoFreeMdl(mdl);
}

static const struct {
    const char *name;
    PVOID with;
} Patches[] = {
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
    INFO("wdfldr: patched %d ntoskrnl imports of khttp.sys", patched);
}

/* ---- WDF objects ---- */
typedef struct FX_QUEUE {
    PFN_WDF_IO_QUEUE_IO_DEVICE_CONTROL ioctl;
} FX_QUEUE;

typedef struct FX_INIT {
    WCHAR name[64];
    USHORT name_len;
    BOOLEAN exclusive;
} FX_INIT;

typedef struct FX_DEVICE {
    PDEVICE_OBJECT dev;
    WCHAR name[64];
    USHORT name_len;
    WCHAR link[64];
    USHORT link_len;
    FX_QUEUE *queue;
    volatile LONG ready;
} FX_DEVICE;

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
} FX_SPIN;

static WDF_DRIVER_GLOBALS Globals;
static PDRIVER_OBJECT Driver;
static PFN_WDF_DRIVER_UNLOAD EvtUnload;
static FX_DEVICE *Device;
static FX_TIMER *Timers[4];
static FX_SPIN *Spins[16];
static volatile LONG PendingRequests;
static volatile LONG WdfObjects;

static void check_size(const char *what, ULONG got, ULONG want)
{
    if (got != want) {
        FAIL("%s: Size %lu, expected %lu (KMDF 1.33 x64)", what, got, want);
    }
}

static NTSTATUS NTAPI fx_ok(PDEVICE_OBJECT dev, PIRP irp)
{
    (void)dev;
    irp->IoStatus.Status = STATUS_SUCCESS;
    irp->IoStatus.Information = 0;
    IoCompleteRequest(irp, IO_NO_INCREMENT);
    return STATUS_SUCCESS;
}

/* IRP_MJ_DEVICE_CONTROL: the default queue's EvtIoDeviceControl, with the IRP as the request. */
static NTSTATUS NTAPI fx_ioctl(PDEVICE_OBJECT dev, PIRP irp)
{
    PIO_STACK_LOCATION sl = IoGetCurrentIrpStackLocation(irp);
    (void)dev;
    if (Device == NULL || !Device->ready || Device->queue == NULL || Device->queue->ioctl == NULL) {
        irp->IoStatus.Status = STATUS_INVALID_DEVICE_STATE;
        irp->IoStatus.Information = 0;
        IoCompleteRequest(irp, IO_NO_INCREMENT);
        return STATUS_INVALID_DEVICE_STATE;
    }
    IoMarkIrpPending(irp);
    InterlockedIncrement(&PendingRequests);
    Device->queue->ioctl((WDFQUEUE)Device->queue, (WDFREQUEST)irp,
                         sl->Parameters.DeviceIoControl.OutputBufferLength,
                         sl->Parameters.DeviceIoControl.InputBufferLength,
                         sl->Parameters.DeviceIoControl.IoControlCode);
    return STATUS_PENDING;
}

static void timer_stop(FX_TIMER *t, BOOLEAN wait);

/* The framework's DriverUnload: EvtDriverUnload, then the objects the framework owns. */
static VOID NTAPI fx_unload(PDRIVER_OBJECT drv)
{
    ULONG i;
    (void)drv;
    if (EvtUnload != NULL) {
        EvtUnload((WDFDRIVER)&Globals);
    }
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
    if (Device != NULL) {
        if (Device->link_len != 0) {
            UNICODE_STRING link = {Device->link_len, Device->link_len, Device->link};
            IoDeleteSymbolicLink(&link);
        }
        IoDeleteDevice(Device->dev);
        free(Device->queue);
        free(Device);
        Device = NULL;
    }
    if (PendingRequests != 0) {
        FAIL("unload: %ld control requests were never completed", PendingRequests);
    }
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
    (void)g;
    (void)d;
    if (sddl == NULL || sddl->Length == 0) {
        FAIL("WdfControlDeviceInitAllocate: no SDDL string");
    }
    InterlockedIncrement(&WdfObjects);
    return (PWDFDEVICE_INIT)calloc(1, sizeof(FX_INIT));
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
    (void)g;
    if (attrs != NULL) {
        check_size("WdfDeviceCreate attributes", attrs->Size, sizeof(WDF_OBJECT_ATTRIBUTES));
    }
    if (Device != NULL) {
        FAIL("WdfDeviceCreate: the harness supports one control device");
        return STATUS_NOT_SUPPORTED;
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
    Driver->MajorFunction[IRP_MJ_CREATE] = fx_ok;
    Driver->MajorFunction[IRP_MJ_CLOSE] = fx_ok;
    Driver->MajorFunction[IRP_MJ_CLEANUP] = fx_ok;
    Driver->MajorFunction[IRP_MJ_DEVICE_CONTROL] = fx_ioctl;
    Device = d;
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

static NTSTATUS NTAPI w_IoQueueCreate(PWDF_DRIVER_GLOBALS g, WDFDEVICE device,
                                      PWDF_IO_QUEUE_CONFIG config, PWDF_OBJECT_ATTRIBUTES attrs,
                                      WDFQUEUE *out)
{
    FX_DEVICE *d = (FX_DEVICE *)device;
    FX_QUEUE *q;
    (void)g;
    check_size("WDF_IO_QUEUE_CONFIG", config->Size, sizeof(WDF_IO_QUEUE_CONFIG));
    if (attrs != NULL) {
        check_size("WdfIoQueueCreate attributes", attrs->Size, sizeof(WDF_OBJECT_ATTRIBUTES));
    }
    if (!config->DefaultQueue || config->DispatchType != WdfIoQueueDispatchSequential) {
        FAIL("WdfIoQueueCreate: the harness supports one sequential default queue");
        return STATUS_NOT_SUPPORTED;
    }
    q = calloc(1, sizeof(*q));
    if (q == NULL) {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    q->ioctl = config->EvtIoDeviceControl;
    d->queue = q;
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
}

static VOID NTAPI w_RequestCompleteWithInformation(PWDF_DRIVER_GLOBALS g, WDFREQUEST request,
                                                   NTSTATUS status, ULONG_PTR info)
{
    PIRP irp = (PIRP)request;
    (void)g;
    if (InterlockedDecrement(&PendingRequests) < 0) {
        FAIL("WdfRequestCompleteWithInformation: request %p completed twice", request);
        InterlockedIncrement(&PendingRequests);
        return;
    }
    {
        PIO_STACK_LOCATION sl = IoGetCurrentIrpStackLocation(irp);
        if (NT_SUCCESS(status) && info > sl->Parameters.DeviceIoControl.OutputBufferLength) {
            FAIL("WdfRequestCompleteWithInformation: %llu bytes reported for an output buffer "
                 "of %lu",
                 (unsigned long long)info, sl->Parameters.DeviceIoControl.OutputBufferLength);
        }
    }
    irp->IoStatus.Status = status;
    irp->IoStatus.Information = info;
    IoCompleteRequest(irp, IO_NO_INCREMENT);
}

static NTSTATUS retrieve(WDFREQUEST request, size_t min, PVOID *buffer, size_t *length, int out)
{
    PIRP irp = (PIRP)request;
    PIO_STACK_LOCATION sl = IoGetCurrentIrpStackLocation(irp);
    size_t have = out ? sl->Parameters.DeviceIoControl.OutputBufferLength
                      : sl->Parameters.DeviceIoControl.InputBufferLength;
    if (buffer == NULL) {
        return STATUS_INVALID_PARAMETER;
    }
    *buffer = NULL;
    if (length != NULL) {
        *length = 0;
    }
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
                FAIL("WdfRequestRetrieveOutputBuffer: a direct-I/O request without a mapped MDL");
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
    return retrieve(r, min, b, l, 0);
}

static NTSTATUS NTAPI w_RequestRetrieveOutputBuffer(PWDF_DRIVER_GLOBALS g, WDFREQUEST r,
                                                    size_t min, PVOID *b, size_t *l)
{
    (void)g;
    return retrieve(r, min, b, l, 1);
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
    KIRQL irql;
    (void)g;
    KeAcquireSpinLock(&s->lock, &irql);
    s->irql = irql;
}

static VOID NTAPI w_SpinLockRelease(PWDF_DRIVER_GLOBALS g, WDFSPINLOCK lock)
{
    FX_SPIN *s = (FX_SPIN *)lock;
    (void)g;
    KeReleaseSpinLock(&s->lock, s->irql);
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
        t->fn((WDFTIMER)t);
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
    Table[WdfDeviceCreateTableIndex] = (WDFFUNC)w_DeviceCreate;
    Table[WdfDeviceCreateSymbolicLinkTableIndex] = (WDFFUNC)w_DeviceCreateSymbolicLink;
    Table[WdfDriverCreateTableIndex] = (WDFFUNC)w_DriverCreate;
    Table[WdfIoQueueCreateTableIndex] = (WDFFUNC)w_IoQueueCreate;
    Table[WdfRequestCompleteWithInformationTableIndex] = (WDFFUNC)w_RequestCompleteWithInformation;
    Table[WdfRequestRetrieveInputBufferTableIndex] = (WDFFUNC)w_RequestRetrieveInputBuffer;
    Table[WdfRequestRetrieveOutputBufferTableIndex] = (WDFFUNC)w_RequestRetrieveOutputBuffer;
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
    if (info == NULL || globals == NULL || info->FuncTable == NULL) {
        FAIL("WdfVersionBind: NULL argument");
        return STATUS_INVALID_PARAMETER;
    }
    if (info->Major != 1 || info->Minor != 33 || info->FuncCount != WdfFunctionTableNumEntries) {
        FAIL("WdfVersionBind: KMDF %lu.%lu with %lu functions; the harness is 1.33 with %d",
             info->Major, info->Minor, info->FuncCount, WdfFunctionTableNumEntries);
        return STATUS_NOT_SUPPORTED;
    }
    patch_imports((PUCHAR)drv->DriverStart);
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
    if (clean) {
        INFO("unload: clean (pool, IRPs, MDLs, sockets, NPI, WDF objects all released)");
    }
    return STATUS_SUCCESS;
}
