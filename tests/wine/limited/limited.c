/*
 * TEST HARNESS ONLY: limited.exe PROGRAM [ARGS...]
 *
 * Runs PROGRAM as a process that is not an administrator's: with this process's token, filtered
 * by CreateRestrictedToken so that BUILTIN\Administrators (S-1-5-32-544) is for deny only, as
 * in the token of an administrator whom UAC has not elevated. Every Wine process is an elevated
 * administrator (server/token.c, token_create_admin), so this is how the black-box suite
 * reaches the driver's URL ACL check for an ordinary user (tests/tests/apps.rs).
 *
 * The program inherits the standard handles and runs in a job that ends it when this process
 * ends (JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE), so that the suite, which kills this process, kills
 * the program too. The exit code is the program's.
 *
 * Windows facts used (Microsoft Learn): CreateRestrictedToken, CreateProcessAsUserW,
 * CreateJobObjectW, SetInformationJobObject (JobObjectExtendedLimitInformation),
 * AssignProcessToJobObject, CreateWellKnownSid (WinBuiltinAdministratorsSid).
 */
#define WIN32_LEAN_AND_MEAN
#include <windows.h>
#include <stdio.h>
#include <wchar.h>

static int fail(const char *what)
{
    fprintf(stderr, "limited: %s failed: %lu\n", what, GetLastError());
    return 125;
}

int wmain(int argc, wchar_t **argv)
{
    HANDLE self, restricted, job;
    BYTE admins[SECURITY_MAX_SID_SIZE];
    DWORD admins_len = sizeof(admins);
    SID_AND_ATTRIBUTES disable[1];
    JOBOBJECT_EXTENDED_LIMIT_INFORMATION limits;
    STARTUPINFOW si;
    PROCESS_INFORMATION pi;
    DWORD code;
    wchar_t *cmdline, *p;
    size_t len = 1;
    int i, first = 1;

    if (argc < 2) {
        fprintf(stderr, "usage: limited.exe PROGRAM [ARGS...]\n");
        return 125;
    }
    if (!OpenProcessToken(GetCurrentProcess(),
                          TOKEN_DUPLICATE | TOKEN_QUERY | TOKEN_ASSIGN_PRIMARY, &self))
        return fail("OpenProcessToken");
    if (!CreateWellKnownSid(WinBuiltinAdministratorsSid, NULL, admins, &admins_len))
        return fail("CreateWellKnownSid");
    disable[0].Sid = admins;
    disable[0].Attributes = 0;
    if (!CreateRestrictedToken(self, 0, 1, disable, 0, NULL, 0, NULL, &restricted))
        return fail("CreateRestrictedToken");

    /* The command line: each argument quoted (none of the suite's holds a quote). */
    for (i = first; i < argc; i++)
        len += wcslen(argv[i]) + 3;
    cmdline = HeapAlloc(GetProcessHeap(), 0, len * sizeof(wchar_t));
    if (!cmdline)
        return fail("HeapAlloc");
    p = cmdline;
    for (i = first; i < argc; i++) {
        size_t n = wcslen(argv[i]);
        if (i > first)
            *p++ = L' ';
        *p++ = L'"';
        memcpy(p, argv[i], n * sizeof(wchar_t));
        p += n;
        *p++ = L'"';
    }
    *p = 0;

    job = CreateJobObjectW(NULL, NULL);
    if (!job)
        return fail("CreateJobObjectW");
    ZeroMemory(&limits, sizeof(limits));
    limits.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
    if (!SetInformationJobObject(job, JobObjectExtendedLimitInformation, &limits, sizeof(limits)))
        return fail("SetInformationJobObject");

    ZeroMemory(&si, sizeof(si));
    si.cb = sizeof(si);
    si.dwFlags = STARTF_USESTDHANDLES;
    si.hStdInput = GetStdHandle(STD_INPUT_HANDLE);
    si.hStdOutput = GetStdHandle(STD_OUTPUT_HANDLE);
    si.hStdError = GetStdHandle(STD_ERROR_HANDLE);
    if (!CreateProcessAsUserW(restricted, NULL, cmdline, NULL, NULL, TRUE, CREATE_SUSPENDED, NULL,
                              NULL, &si, &pi))
        return fail("CreateProcessAsUserW");
    if (!AssignProcessToJobObject(job, pi.hProcess)) {
        TerminateProcess(pi.hProcess, 125);
        return fail("AssignProcessToJobObject");
    }
    ResumeThread(pi.hThread);
    WaitForSingleObject(pi.hProcess, INFINITE);
    if (!GetExitCodeProcess(pi.hProcess, &code))
        return fail("GetExitCodeProcess");
    return (int)code;
}
