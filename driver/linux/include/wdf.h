/*
 * khttp's KMDF 1.33 header for the Linux build of khttp.sys (driver/linux/build.sh).
 *
 * Written by the khttp project from the documented KMDF API; it is not Microsoft's wdf.h and
 * covers only what khttp.sys, the `wdk` crate and wdk-sys/wdk-macros use. Every value here is
 * an ABI fact with its source in driver/linux/WDF-FACTS.md (function-table indices: §1; table
 * size: §2; layouts and enum values: §3; loader globals: §4.3). The Windows build uses the
 * WDK's own headers instead.
 *
 * Constraints (WDF-FACTS.md §5): parsed by bindgen in MSVC mode and compiled by clang-cl
 * (wdk-sys's wdf.c); enums keep their `_WDF_...` tags; every PFN_ typedef names its parameters
 * and takes PWDF_DRIVER_GLOBALS first; WDF_NO_HANDLE and friends are not defined here
 * (wdk-sys defines them itself, and a second definition would make Rust imports ambiguous).
 */
#ifndef KHTTP_WDF_H
#define KHTTP_WDF_H

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Handles (§3) ---- */
typedef HANDLE WDFOBJECT;
#define KHTTP_WDF_DECLARE_HANDLE(name) \
    struct name##__ { int unused; };   \
    typedef struct name##__ *name
KHTTP_WDF_DECLARE_HANDLE(WDFDRIVER);
KHTTP_WDF_DECLARE_HANDLE(WDFDEVICE);
KHTTP_WDF_DECLARE_HANDLE(WDFQUEUE);
KHTTP_WDF_DECLARE_HANDLE(WDFREQUEST);
KHTTP_WDF_DECLARE_HANDLE(WDFTIMER);
KHTTP_WDF_DECLARE_HANDLE(WDFSPINLOCK);
KHTTP_WDF_DECLARE_HANDLE(WDFFILEOBJECT);
typedef struct WDFDEVICE_INIT *PWDFDEVICE_INIT;
typedef PVOID WDFCONTEXT;
typedef size_t *WDF_STRUCT_INFO;
typedef VOID (*WDFFUNC)(VOID);

/* ---- Enums (§3) ---- */
typedef enum _WDF_TRI_STATE {
    WdfFalse = 0,
    WdfTrue = 1,
    WdfUseDefault = 2
} WDF_TRI_STATE, *PWDF_TRI_STATE;

/* WDF:wdfdevice.h:511-518 (§1a). WdfFileObjectCanBeOptional (0x80000000) is a flag OR-ed in. */
typedef enum _WDF_FILEOBJECT_CLASS {
    WdfFileObjectInvalid = 0,
    WdfFileObjectNotRequired = 1,
    WdfFileObjectWdfCanUseFsContext = 2,
    WdfFileObjectWdfCanUseFsContext2 = 3,
    WdfFileObjectWdfCannotUseFsContexts = 4
} WDF_FILEOBJECT_CLASS;

typedef enum _WDF_EXECUTION_LEVEL {
    WdfExecutionLevelInvalid = 0,
    WdfExecutionLevelInheritFromParent = 1,
    WdfExecutionLevelPassive = 2,
    WdfExecutionLevelDispatch = 3
} WDF_EXECUTION_LEVEL;

typedef enum _WDF_SYNCHRONIZATION_SCOPE {
    WdfSynchronizationScopeInvalid = 0,
    WdfSynchronizationScopeInheritFromParent = 1,
    WdfSynchronizationScopeDevice = 2,
    WdfSynchronizationScopeQueue = 3,
    WdfSynchronizationScopeNone = 4
} WDF_SYNCHRONIZATION_SCOPE;

typedef enum _WDF_IO_QUEUE_DISPATCH_TYPE {
    WdfIoQueueDispatchInvalid = 0,
    WdfIoQueueDispatchSequential = 1,
    WdfIoQueueDispatchParallel = 2,
    WdfIoQueueDispatchManual = 3,
    WdfIoQueueDispatchMax = 4
} WDF_IO_QUEUE_DISPATCH_TYPE;

typedef enum _WDF_DEVICE_IO_TYPE {
    WdfDeviceIoUndefined = 0,
    WdfDeviceIoNeither = 1,
    WdfDeviceIoBuffered = 2,
    WdfDeviceIoDirect = 3,
    WdfDeviceIoBufferedOrDirect = 4,
    WdfDeviceIoMaximum = 5
} WDF_DEVICE_IO_TYPE;

typedef enum _WDF_DRIVER_INIT_FLAGS {
    WdfDriverInitNonPnpDriver = 0x1,
    WdfDriverInitNoDispatchOverride = 0x2,
    WdfVerifyOn = 0x4,
    WdfVerifierOn = 0x8,
    WdfDriverInitCompanion = 0x10
} WDF_DRIVER_INIT_FLAGS;

/* ---- Driver globals (§3) ---- */
typedef struct _WDF_DRIVER_GLOBALS {
    WDFDRIVER Driver;
    ULONG DriverFlags;
    ULONG DriverTag;
    CHAR DriverName[32];
    BOOLEAN DisplaceDriverUnload;
} WDF_DRIVER_GLOBALS, *PWDF_DRIVER_GLOBALS;

/* ---- Callbacks (§3) ---- */
typedef NTSTATUS EVT_WDF_DRIVER_DEVICE_ADD(WDFDRIVER Driver, PWDFDEVICE_INIT DeviceInit);
typedef EVT_WDF_DRIVER_DEVICE_ADD *PFN_WDF_DRIVER_DEVICE_ADD;
typedef VOID EVT_WDF_DRIVER_UNLOAD(WDFDRIVER Driver);
typedef EVT_WDF_DRIVER_UNLOAD *PFN_WDF_DRIVER_UNLOAD;
typedef VOID EVT_WDF_OBJECT_CONTEXT_CLEANUP(WDFOBJECT Object);
typedef EVT_WDF_OBJECT_CONTEXT_CLEANUP *PFN_WDF_OBJECT_CONTEXT_CLEANUP;
typedef VOID EVT_WDF_OBJECT_CONTEXT_DESTROY(WDFOBJECT Object);
typedef EVT_WDF_OBJECT_CONTEXT_DESTROY *PFN_WDF_OBJECT_CONTEXT_DESTROY;
typedef VOID EVT_WDF_IO_QUEUE_IO_DEFAULT(WDFQUEUE Queue, WDFREQUEST Request);
typedef EVT_WDF_IO_QUEUE_IO_DEFAULT *PFN_WDF_IO_QUEUE_IO_DEFAULT;
typedef VOID EVT_WDF_IO_QUEUE_IO_READ(WDFQUEUE Queue, WDFREQUEST Request, size_t Length);
typedef EVT_WDF_IO_QUEUE_IO_READ *PFN_WDF_IO_QUEUE_IO_READ;
typedef VOID EVT_WDF_IO_QUEUE_IO_WRITE(WDFQUEUE Queue, WDFREQUEST Request, size_t Length);
typedef EVT_WDF_IO_QUEUE_IO_WRITE *PFN_WDF_IO_QUEUE_IO_WRITE;
typedef VOID EVT_WDF_IO_QUEUE_IO_DEVICE_CONTROL(WDFQUEUE Queue, WDFREQUEST Request,
                                                size_t OutputBufferLength,
                                                size_t InputBufferLength, ULONG IoControlCode);
typedef EVT_WDF_IO_QUEUE_IO_DEVICE_CONTROL *PFN_WDF_IO_QUEUE_IO_DEVICE_CONTROL;
typedef VOID EVT_WDF_IO_QUEUE_IO_INTERNAL_DEVICE_CONTROL(WDFQUEUE Queue, WDFREQUEST Request,
                                                         size_t OutputBufferLength,
                                                         size_t InputBufferLength,
                                                         ULONG IoControlCode);
typedef EVT_WDF_IO_QUEUE_IO_INTERNAL_DEVICE_CONTROL *PFN_WDF_IO_QUEUE_IO_INTERNAL_DEVICE_CONTROL;
typedef VOID EVT_WDF_IO_QUEUE_IO_STOP(WDFQUEUE Queue, WDFREQUEST Request, ULONG ActionFlags);
typedef EVT_WDF_IO_QUEUE_IO_STOP *PFN_WDF_IO_QUEUE_IO_STOP;
typedef VOID EVT_WDF_IO_QUEUE_IO_RESUME(WDFQUEUE Queue, WDFREQUEST Request);
typedef EVT_WDF_IO_QUEUE_IO_RESUME *PFN_WDF_IO_QUEUE_IO_RESUME;
typedef VOID EVT_WDF_IO_QUEUE_IO_CANCELED_ON_QUEUE(WDFQUEUE Queue, WDFREQUEST Request);
typedef EVT_WDF_IO_QUEUE_IO_CANCELED_ON_QUEUE *PFN_WDF_IO_QUEUE_IO_CANCELED_ON_QUEUE;
/* EVT_WDF_REQUEST_CANCEL (wdfrequest.h; Microsoft Learn): the framework cancels a request the
 * driver marked cancelable; the callback must complete it. */
typedef VOID EVT_WDF_REQUEST_CANCEL(WDFREQUEST Request);
typedef EVT_WDF_REQUEST_CANCEL *PFN_WDF_REQUEST_CANCEL;
/* WDF:wdfdevice.h:560-595 (§1a): file object callbacks, PASSIVE_LEVEL. */
typedef VOID EVT_WDF_DEVICE_FILE_CREATE(WDFDEVICE Device, WDFREQUEST Request,
                                        WDFFILEOBJECT FileObject);
typedef EVT_WDF_DEVICE_FILE_CREATE *PFN_WDF_DEVICE_FILE_CREATE;
typedef VOID EVT_WDF_FILE_CLOSE(WDFFILEOBJECT FileObject);
typedef EVT_WDF_FILE_CLOSE *PFN_WDF_FILE_CLOSE;
typedef VOID EVT_WDF_FILE_CLEANUP(WDFFILEOBJECT FileObject);
typedef EVT_WDF_FILE_CLEANUP *PFN_WDF_FILE_CLEANUP;
typedef VOID EVT_WDF_TIMER(WDFTIMER Timer);
typedef EVT_WDF_TIMER *PFN_WDF_TIMER;

/* ---- Configuration structures (§3; x64 sizes in the comments) ---- */
typedef struct _WDF_OBJECT_CONTEXT_TYPE_INFO WDF_OBJECT_CONTEXT_TYPE_INFO,
    *PWDF_OBJECT_CONTEXT_TYPE_INFO;
typedef PWDF_OBJECT_CONTEXT_TYPE_INFO (*PFN_GET_UNIQUE_CONTEXT_TYPE)(VOID);
struct _WDF_OBJECT_CONTEXT_TYPE_INFO { /* 40 bytes */
    ULONG Size;
    const char *ContextName;
    size_t ContextSize;
    const WDF_OBJECT_CONTEXT_TYPE_INFO *UniqueType;
    PFN_GET_UNIQUE_CONTEXT_TYPE EvtDriverGetUniqueContextType;
};

typedef struct _WDF_OBJECT_ATTRIBUTES { /* 56 bytes */
    ULONG Size;
    PFN_WDF_OBJECT_CONTEXT_CLEANUP EvtCleanupCallback;
    PFN_WDF_OBJECT_CONTEXT_DESTROY EvtDestroyCallback;
    WDF_EXECUTION_LEVEL ExecutionLevel;
    WDF_SYNCHRONIZATION_SCOPE SynchronizationScope;
    WDFOBJECT ParentObject;
    size_t ContextSizeOverride;
    const WDF_OBJECT_CONTEXT_TYPE_INFO *ContextTypeInfo;
} WDF_OBJECT_ATTRIBUTES, *PWDF_OBJECT_ATTRIBUTES;

typedef struct _WDF_DRIVER_CONFIG { /* 32 bytes */
    ULONG Size;
    PFN_WDF_DRIVER_DEVICE_ADD EvtDriverDeviceAdd;
    PFN_WDF_DRIVER_UNLOAD EvtDriverUnload;
    ULONG DriverInitFlags;
    ULONG DriverPoolTag;
} WDF_DRIVER_CONFIG, *PWDF_DRIVER_CONFIG;

typedef struct _WDF_IO_QUEUE_CONFIG { /* 96 bytes */
    ULONG Size;
    WDF_IO_QUEUE_DISPATCH_TYPE DispatchType;
    WDF_TRI_STATE PowerManaged;
    BOOLEAN AllowZeroLengthRequests;
    BOOLEAN DefaultQueue;
    PFN_WDF_IO_QUEUE_IO_DEFAULT EvtIoDefault;
    PFN_WDF_IO_QUEUE_IO_READ EvtIoRead;
    PFN_WDF_IO_QUEUE_IO_WRITE EvtIoWrite;
    PFN_WDF_IO_QUEUE_IO_DEVICE_CONTROL EvtIoDeviceControl;
    PFN_WDF_IO_QUEUE_IO_INTERNAL_DEVICE_CONTROL EvtIoInternalDeviceControl;
    PFN_WDF_IO_QUEUE_IO_STOP EvtIoStop;
    PFN_WDF_IO_QUEUE_IO_RESUME EvtIoResume;
    PFN_WDF_IO_QUEUE_IO_CANCELED_ON_QUEUE EvtIoCanceledOnQueue;
    union {
        struct {
            ULONG NumberOfPresentedRequests;
        } Parallel;
    } Settings;
    WDFDRIVER Driver;
} WDF_IO_QUEUE_CONFIG, *PWDF_IO_QUEUE_CONFIG;

typedef struct _WDF_FILEOBJECT_CONFIG { /* 40 bytes (WDF:wdfdevice.h:597-638; §1a) */
    ULONG Size;
    PFN_WDF_DEVICE_FILE_CREATE EvtDeviceFileCreate;
    PFN_WDF_FILE_CLOSE EvtFileClose;
    PFN_WDF_FILE_CLEANUP EvtFileCleanup;
    WDF_TRI_STATE AutoForwardCleanupClose;
    WDF_FILEOBJECT_CLASS FileObjectClass;
} WDF_FILEOBJECT_CONFIG, *PWDF_FILEOBJECT_CONFIG;

typedef struct _WDF_TIMER_CONFIG { /* 40 bytes: the last field is 8-byte aligned (§3) */
    ULONG Size;
    PFN_WDF_TIMER EvtTimerFunc;
    ULONG Period;
    BOOLEAN AutomaticSerialization;
    ULONG TolerableDelay;
    __declspec(align(8)) BOOLEAN UseHighResolutionTimer;
} WDF_TIMER_CONFIG, *PWDF_TIMER_CONFIG;

/* ---- The function table (§1, §2): indices are KMDF 1.33's ---- */
typedef enum _WDFFUNCENUM {
    WdfControlDeviceInitAllocateTableIndex = 25,
    WdfControlFinishInitializingTableIndex = 27,
    WdfDeviceInitFreeTableIndex = 54,
    WdfDeviceInitSetIoTypeTableIndex = 61,
    WdfDeviceInitSetExclusiveTableIndex = 62,
    WdfDeviceInitAssignNameTableIndex = 67,
    WdfDeviceInitSetFileObjectConfigTableIndex = 71,
    WdfDeviceCreateTableIndex = 75,
    WdfDeviceCreateSymbolicLinkTableIndex = 80,
    WdfDriverCreateTableIndex = 116,
    WdfIoQueueCreateTableIndex = 152,
    WdfIoQueueRetrieveNextRequestTableIndex = 158,
    WdfIoQueueRetrieveRequestByFileObjectTableIndex = 159,
    WdfRequestCompleteWithInformationTableIndex = 265,
    WdfRequestRetrieveInputBufferTableIndex = 269,
    WdfRequestRetrieveOutputBufferTableIndex = 270,
    WdfRequestGetFileObjectTableIndex = 277,
    WdfRequestForwardToIoQueueTableIndex = 281,
    WdfRequestRequeueTableIndex = 283,
    WdfRequestUnmarkCancelableTableIndex = 256,
    WdfRequestMarkCancelableExTableIndex = 393,
    WdfSpinLockCreateTableIndex = 315,
    WdfSpinLockAcquireTableIndex = 316,
    WdfSpinLockReleaseTableIndex = 317,
    WdfTimerCreateTableIndex = 318,
    WdfTimerStartTableIndex = 319,
    WdfTimerStopTableIndex = 320,
    WdfFunctionTableNumEntries = 458
} WDFFUNCENUM;

typedef PWDFDEVICE_INIT (*PFN_WDFCONTROLDEVICEINITALLOCATE)(PWDF_DRIVER_GLOBALS DriverGlobals,
                                                            WDFDRIVER Driver,
                                                            const UNICODE_STRING *SDDLString);
typedef VOID (*PFN_WDFCONTROLFINISHINITIALIZING)(PWDF_DRIVER_GLOBALS DriverGlobals,
                                                 WDFDEVICE Device);
typedef VOID (*PFN_WDFDEVICEINITFREE)(PWDF_DRIVER_GLOBALS DriverGlobals,
                                      PWDFDEVICE_INIT DeviceInit);
typedef VOID (*PFN_WDFDEVICEINITSETIOTYPE)(PWDF_DRIVER_GLOBALS DriverGlobals,
                                           PWDFDEVICE_INIT DeviceInit, WDF_DEVICE_IO_TYPE IoType);
typedef VOID (*PFN_WDFDEVICEINITSETEXCLUSIVE)(PWDF_DRIVER_GLOBALS DriverGlobals,
                                              PWDFDEVICE_INIT DeviceInit, BOOLEAN IsExclusive);
typedef NTSTATUS (*PFN_WDFDEVICEINITASSIGNNAME)(PWDF_DRIVER_GLOBALS DriverGlobals,
                                                PWDFDEVICE_INIT DeviceInit,
                                                PCUNICODE_STRING DeviceName);
typedef VOID (*PFN_WDFDEVICEINITSETFILEOBJECTCONFIG)(PWDF_DRIVER_GLOBALS DriverGlobals,
                                                    PWDFDEVICE_INIT DeviceInit,
                                                    PWDF_FILEOBJECT_CONFIG FileObjectConfig,
                                                    PWDF_OBJECT_ATTRIBUTES FileObjectAttributes);
typedef NTSTATUS (*PFN_WDFDEVICECREATE)(PWDF_DRIVER_GLOBALS DriverGlobals,
                                        PWDFDEVICE_INIT *DeviceInit,
                                        PWDF_OBJECT_ATTRIBUTES DeviceAttributes,
                                        WDFDEVICE *Device);
typedef NTSTATUS (*PFN_WDFDEVICECREATESYMBOLICLINK)(PWDF_DRIVER_GLOBALS DriverGlobals,
                                                    WDFDEVICE Device,
                                                    PCUNICODE_STRING SymbolicLinkName);
typedef NTSTATUS (*PFN_WDFDRIVERCREATE)(PWDF_DRIVER_GLOBALS DriverGlobals,
                                        PDRIVER_OBJECT DriverObject,
                                        PCUNICODE_STRING RegistryPath,
                                        PWDF_OBJECT_ATTRIBUTES DriverAttributes,
                                        PWDF_DRIVER_CONFIG DriverConfig, WDFDRIVER *Driver);
typedef NTSTATUS (*PFN_WDFIOQUEUECREATE)(PWDF_DRIVER_GLOBALS DriverGlobals, WDFDEVICE Device,
                                         PWDF_IO_QUEUE_CONFIG Config,
                                         PWDF_OBJECT_ATTRIBUTES QueueAttributes,
                                         WDFQUEUE *Queue);
typedef NTSTATUS (*PFN_WDFIOQUEUERETRIEVENEXTREQUEST)(PWDF_DRIVER_GLOBALS DriverGlobals,
                                                      WDFQUEUE Queue, WDFREQUEST *OutRequest);
typedef NTSTATUS (*PFN_WDFIOQUEUERETRIEVEREQUESTBYFILEOBJECT)(PWDF_DRIVER_GLOBALS DriverGlobals,
                                                              WDFQUEUE Queue,
                                                              WDFFILEOBJECT FileObject,
                                                              WDFREQUEST *OutRequest);
typedef WDFFILEOBJECT (*PFN_WDFREQUESTGETFILEOBJECT)(PWDF_DRIVER_GLOBALS DriverGlobals,
                                                     WDFREQUEST Request);
typedef NTSTATUS (*PFN_WDFREQUESTFORWARDTOIOQUEUE)(PWDF_DRIVER_GLOBALS DriverGlobals,
                                                   WDFREQUEST Request,
                                                   WDFQUEUE DestinationQueue);
/* WdfRequestRequeue (wdfrequest.h; Microsoft Learn: "returns the specified I/O request to the
 * head of the I/O queue from which it was delivered to the driver", manual queues only,
 * <= DISPATCH_LEVEL). */
typedef NTSTATUS (*PFN_WDFREQUESTREQUEUE)(PWDF_DRIVER_GLOBALS DriverGlobals, WDFREQUEST Request);
/* WdfRequestMarkCancelableEx (KMDF 1.9+; Microsoft Learn): STATUS_CANCELLED when the request
 * was already canceled (the callback is then not called), <= DISPATCH_LEVEL. */
typedef NTSTATUS (*PFN_WDFREQUESTMARKCANCELABLEEX)(PWDF_DRIVER_GLOBALS DriverGlobals,
                                                   WDFREQUEST Request,
                                                   PFN_WDF_REQUEST_CANCEL EvtRequestCancel);
/* WdfRequestUnmarkCancelable (Microsoft Learn): STATUS_CANCELLED when EvtRequestCancel has been
 * or is about to be called, which then completes the request; <= DISPATCH_LEVEL. */
typedef NTSTATUS (*PFN_WDFREQUESTUNMARKCANCELABLE)(PWDF_DRIVER_GLOBALS DriverGlobals,
                                                   WDFREQUEST Request);
typedef VOID (*PFN_WDFREQUESTCOMPLETEWITHINFORMATION)(PWDF_DRIVER_GLOBALS DriverGlobals,
                                                      WDFREQUEST Request, NTSTATUS Status,
                                                      ULONG_PTR Information);
typedef NTSTATUS (*PFN_WDFREQUESTRETRIEVEINPUTBUFFER)(PWDF_DRIVER_GLOBALS DriverGlobals,
                                                      WDFREQUEST Request,
                                                      size_t MinimumRequiredLength,
                                                      PVOID *Buffer, size_t *Length);
typedef NTSTATUS (*PFN_WDFREQUESTRETRIEVEOUTPUTBUFFER)(PWDF_DRIVER_GLOBALS DriverGlobals,
                                                       WDFREQUEST Request,
                                                       size_t MinimumRequiredSize,
                                                       PVOID *Buffer, size_t *Length);
typedef NTSTATUS (*PFN_WDFSPINLOCKCREATE)(PWDF_DRIVER_GLOBALS DriverGlobals,
                                          PWDF_OBJECT_ATTRIBUTES SpinLockAttributes,
                                          WDFSPINLOCK *SpinLock);
typedef VOID (*PFN_WDFSPINLOCKACQUIRE)(PWDF_DRIVER_GLOBALS DriverGlobals, WDFSPINLOCK SpinLock);
typedef VOID (*PFN_WDFSPINLOCKRELEASE)(PWDF_DRIVER_GLOBALS DriverGlobals, WDFSPINLOCK SpinLock);
typedef NTSTATUS (*PFN_WDFTIMERCREATE)(PWDF_DRIVER_GLOBALS DriverGlobals,
                                       PWDF_TIMER_CONFIG Config,
                                       PWDF_OBJECT_ATTRIBUTES Attributes, WDFTIMER *Timer);
typedef BOOLEAN (*PFN_WDFTIMERSTART)(PWDF_DRIVER_GLOBALS DriverGlobals, WDFTIMER Timer,
                                     LONGLONG DueTime);
typedef BOOLEAN (*PFN_WDFTIMERSTOP)(PWDF_DRIVER_GLOBALS DriverGlobals, WDFTIMER Timer,
                                    BOOLEAN Wait);

/* ---- Globals the entry stub defines (§4.3) ---- */
extern const WDFFUNC *WdfFunctions_01033;
#define WdfFunctions WdfFunctions_01033
extern PWDF_DRIVER_GLOBALS WdfDriverGlobals;
extern ULONG WdfFunctionCount;
extern ULONG WdfStructureCount;
extern WDF_STRUCT_INFO WdfStructures;
extern BOOLEAN WdfClientVersionHigherThanFramework;
extern ULONG WdfMinimumVersionRequired;

#ifdef __cplusplus
}
#endif

#endif /* KHTTP_WDF_H */
