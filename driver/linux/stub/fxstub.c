/*
 * khttp's KMDF entry stub for the Linux build (driver/linux/build.sh). On Windows the driver
 * links Microsoft's WdfDriverEntry.lib instead.
 *
 * Written by the khttp project from the loader contract described, with sources, in
 * driver/linux/WDF-FACTS.md §4: the image entry point FxDriverEntry binds to the framework
 * through WDFLDR.SYS's WdfVersionBind (which fills WdfFunctions_01033 and WdfDriverGlobals),
 * calls the driver's DriverEntry, and chains the driver's unload so that the framework is
 * unbound after it. Bind information is the version-2 layout (88 bytes) that KMDF 1.25 and
 * later stubs use.
 */
#include <ntddk.h>
#include "wdf.h"

typedef struct _KHTTP_WDF_VERSION {
    ULONG Major;
    ULONG Minor;
    ULONG Build;
} KHTTP_WDF_VERSION;

typedef struct _KHTTP_WDF_BIND_INFO {
    ULONG Size;
    PWCHAR Component;
    KHTTP_WDF_VERSION Version;
    ULONG FuncCount;
    WDFFUNC *FuncTable; /* for 1.33: the address of WdfFunctions_01033 (§4.1) */
    PVOID Module;
} KHTTP_WDF_BIND_INFO;

typedef struct _KHTTP_WDF_BIND_INFO2 {
    KHTTP_WDF_BIND_INFO V1;
    ULONG *MinimumVersionRequired;
    BOOLEAN *ClientVersionHigherThanFramework;
    ULONG *FuncCountPtr;
    ULONG *StructCountPtr;
    WDF_STRUCT_INFO *StructTable;
} KHTTP_WDF_BIND_INFO2;

_Static_assert(sizeof(KHTTP_WDF_BIND_INFO) == 48, "WDF_BIND_INFO is 48 bytes on x64");
_Static_assert(__builtin_offsetof(KHTTP_WDF_BIND_INFO, FuncTable) == 32, "FuncTable at 0x20");
_Static_assert(sizeof(KHTTP_WDF_BIND_INFO2) == 88, "WDF_BIND_INFO2 is 88 bytes on x64");
_Static_assert(sizeof(WDF_DRIVER_GLOBALS) == 56, "WDF_DRIVER_GLOBALS is 56 bytes on x64");
_Static_assert(sizeof(WDF_TIMER_CONFIG) == 40, "WDF_TIMER_CONFIG is 40 bytes on x64");
_Static_assert(sizeof(WDF_IO_QUEUE_CONFIG) == 96, "WDF_IO_QUEUE_CONFIG is 96 bytes on x64");
_Static_assert(sizeof(WDF_OBJECT_ATTRIBUTES) == 56, "WDF_OBJECT_ATTRIBUTES is 56 bytes on x64");
_Static_assert(sizeof(WDF_DRIVER_CONFIG) == 32, "WDF_DRIVER_CONFIG is 32 bytes on x64");

typedef PVOID KHTTP_COMPONENT_GLOBALS;

/* WDFLDR.SYS exports (§4.2). */
NTSTATUS WdfVersionBind(PDRIVER_OBJECT DriverObject, PUNICODE_STRING RegistryPath,
                        KHTTP_WDF_BIND_INFO *BindInfo, KHTTP_COMPONENT_GLOBALS *ComponentGlobals);
NTSTATUS WdfVersionUnbind(PUNICODE_STRING RegistryPath, KHTTP_WDF_BIND_INFO *BindInfo,
                          KHTTP_COMPONENT_GLOBALS ComponentGlobals);

/* The driver's entry point (driver/src/lib.rs). */
NTSTATUS DriverEntry(PDRIVER_OBJECT DriverObject, PUNICODE_STRING RegistryPath);

/* The globals the framework headers declare (§4.3). */
const WDFFUNC *WdfFunctions_01033 = NULL;
PWDF_DRIVER_GLOBALS WdfDriverGlobals = NULL;
ULONG WdfFunctionCount = WdfFunctionTableNumEntries;
ULONG WdfStructureCount = 81;
WDF_STRUCT_INFO WdfStructures = NULL;
BOOLEAN WdfClientVersionHigherThanFramework = FALSE;
ULONG WdfMinimumVersionRequired = 33;

static WCHAR StubComponent[] = L"KmdfLibrary";

static KHTTP_WDF_BIND_INFO2 StubBindInfo = {
    {sizeof(KHTTP_WDF_BIND_INFO2), StubComponent, {1, 33, 0}, WdfFunctionTableNumEntries,
     (WDFFUNC *)&WdfFunctions_01033, NULL},
    &WdfMinimumVersionRequired,
    &WdfClientVersionHigherThanFramework,
    &WdfFunctionCount,
    &WdfStructureCount,
    &WdfStructures,
};

/* The stub's own copy of the registry path, used again to unbind. */
static WCHAR StubRegistryBuffer[260];
static UNICODE_STRING StubRegistryPath = {0, sizeof(StubRegistryBuffer), StubRegistryBuffer};
static PDRIVER_UNLOAD StubSavedUnload = NULL;

static VOID StubUnbind(VOID)
{
    (void)WdfVersionUnbind(&StubRegistryPath, &StubBindInfo.V1,
                           (KHTTP_COMPONENT_GLOBALS)WdfDriverGlobals);
}

static VOID NTAPI StubDriverUnload(PDRIVER_OBJECT DriverObject)
{
    if (StubSavedUnload != NULL) {
        StubSavedUnload(DriverObject);
    }
    StubUnbind();
}

NTSTATUS NTAPI FxDriverEntry(PDRIVER_OBJECT DriverObject, PUNICODE_STRING RegistryPath)
{
    NTSTATUS status;
    USHORT i;

    if (DriverObject == NULL) {
        return DriverEntry(DriverObject, RegistryPath);
    }
    if (RegistryPath == NULL || RegistryPath->Length > sizeof(StubRegistryBuffer)) {
        return STATUS_INVALID_PARAMETER;
    }
    for (i = 0; i < RegistryPath->Length / sizeof(WCHAR); i++) {
        StubRegistryBuffer[i] = RegistryPath->Buffer[i];
    }
    StubRegistryPath.Length = RegistryPath->Length;

    status = WdfVersionBind(DriverObject, &StubRegistryPath, &StubBindInfo.V1,
                            (KHTTP_COMPONENT_GLOBALS *)&WdfDriverGlobals);
    if (!NT_SUCCESS(status)) {
        return status;
    }
    status = DriverEntry(DriverObject, RegistryPath);
    if (!NT_SUCCESS(status)) {
        StubUnbind();
        return status;
    }
    /* WdfDriverCreate sets DisplaceDriverUnload for a non-PnP driver with EvtDriverUnload
     * (§4.4 step 8): the stub then owns DriverUnload and calls the framework's after it. */
    if (WdfDriverGlobals != NULL && WdfDriverGlobals->DisplaceDriverUnload) {
        StubSavedUnload = DriverObject->DriverUnload;
        DriverObject->DriverUnload = StubDriverUnload;
    }
    return STATUS_SUCCESS;
}
