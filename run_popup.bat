@echo off
rem Start the LoRA training wizard on Windows: double-click this file.
rem The first run creates the .venv folder beside it (a few minutes); later runs start at once.
rem Options pass through, e.g.  run_popup.bat --demo   or   run_popup.bat --load-json "C:\my configs\a.json"
rem
rem cmd.exe expands %NAME% when it reads a line, and it reads a whole ( ... ) block as one line: so no variable is
rem set and read inside one block here, each step is a label reached by goto or call, and every path is quoted
rem (spaces, &, ^ and parentheses in the folder's name are harmless). tests\test_launcher_windows.py runs this file
rem under Wine's cmd.
setlocal EnableExtensions DisableDelayedExpansion
set "HERE=%~dp0"
set "VENV=%~dp0.venv"
set "VPY=%~dp0.venv\Scripts\python.exe"
set "STAMP=%~dp0.venv\requirements.txt.installed"
rem The Pythons every pinned package has wheels for (tools\check_python_versions.py); the newest found is used.
set "PYTHON_VERSIONS=3.14 3.13 3.12 3.11"
pushd "%HERE%"

if not exist "%VPY%" goto :create_venv
rem Up to date when requirements.txt is byte for byte the copy saved after the last complete install.
"%VPY%" -c "import sys; sys.exit(open(sys.argv[1], 'rb').read() != open(sys.argv[2], 'rb').read())" "%HERE%requirements.txt" "%STAMP%" >nul 2>&1
if not errorlevel 1 goto :start
"%VPY%" -m pip --version >nul 2>&1
if not errorlevel 1 goto :install
echo The environment in "%VENV%" is incomplete (an earlier first run did not finish): making it again...

:create_venv
if exist "%VENV%\" rmdir /s /q "%VENV%"
call :find_python
if not defined PY goto :no_python
echo Creating the Python environment in "%VENV%" with Python %PY_VERSION% (first run only)...
%PY% -m venv "%VENV%"
if errorlevel 1 goto :venv_failed

:install
echo Installing the pinned packages (first run, or after an update): this takes a few minutes...
set "CUDA_TORCH_FAILED="
nvidia-smi >nul 2>&1
if not errorlevel 1 call :install_cuda_torch
"%VPY%" -m pip install --disable-pip-version-check -r "%HERE%requirements.txt"
if errorlevel 1 goto :pip_failed
if not defined CUDA_TORCH_FAILED copy /y "%HERE%requirements.txt" "%STAMP%" >nul

:start
"%VPY%" "%HERE%popup_main.py" %*
set "CODE=%ERRORLEVEL%"
if not "%CODE%"=="0" call :keep_window_open
popd
exit /b %CODE%


:find_python
rem Sets PY (the command) and PY_VERSION for the newest supported Python that has Tk. When there is none, PY stays
rem empty and PY_NO_TK or PY_OTHER name the version that was found instead.
set "PY="
set "PY_NO_TK="
set "PY_OTHER="
for %%V in (%PYTHON_VERSIONS%) do if not defined PY call :try_python py -%%V
if not defined PY call :try_python python
if not defined PY call :try_python py
exit /b 0

:try_python
rem %* is a command that may start a Python: "py -3.13", "python" or "py" (the py launcher's default).
set "FOUND="
for /f "tokens=2" %%v in ('%* --version 2^>nul') do set "FOUND=%%v"
if not defined FOUND exit /b 0
for /f "tokens=1,2 delims=." %%a in ("%FOUND%") do set "FOUND=%%a.%%b"
set "SUPPORTED="
for %%V in (%PYTHON_VERSIONS%) do if "%%V"=="%FOUND%" set "SUPPORTED=1"
if not defined SUPPORTED goto :unsupported_python
%* -c "import tkinter" >nul 2>&1
if errorlevel 1 goto :python_without_tk
set "PY=%*"
set "PY_VERSION=%FOUND%"
exit /b 0

:unsupported_python
if not defined PY_OTHER set "PY_OTHER=%FOUND%"
exit /b 0

:python_without_tk
if not defined PY_NO_TK set "PY_NO_TK=%FOUND%"
exit /b 0

:install_cuda_torch
rem wizard\hardware.py reads nvidia-smi (the driver's CUDA version, the card) and names the PyTorch CUDA build that
rem runs there, e.g. cu130; the build is installed before requirements.txt, whose torch pin it then satisfies.
"%VPY%" -m wizard.hardware > "%VENV%\torch-build.txt"
if errorlevel 1 exit /b 0
set /p TORCH_BUILD=<"%VENV%\torch-build.txt"
set "TORCH_PIN="
for /f "usebackq eol=# tokens=1,2 delims== " %%a in ("%HERE%requirements.txt") do if /i "%%a"=="torch" set "TORCH_PIN=%%b"
echo An NVIDIA GPU was found: installing PyTorch %TORCH_PIN% built for CUDA (%TORCH_BUILD%) first...
"%VPY%" -m pip install --disable-pip-version-check "torch==%TORCH_PIN%+%TORCH_BUILD%" --index-url "https://download.pytorch.org/whl/%TORCH_BUILD%"
if not errorlevel 1 exit /b 0
set "CUDA_TORCH_FAILED=1"
echo PyTorch's CUDA build could not be installed (see above), so training would run on the CPU: check the internet connection, then double-click this file again.
exit /b 0

:keep_window_open
rem A double-clicked window closes when this file ends: pause so that the message can be read, except when
rem WIZARD_NO_PAUSE is set (the tests) or a terminal started this file (its command line has no /c).
if defined WIZARD_NO_PAUSE exit /b 0
setlocal EnableDelayedExpansion
set "LINE=!cmdcmdline!"
if defined LINE if "!LINE:/c =!"=="!LINE!" exit /b 0
pause
exit /b 0

:no_python
if defined PY_NO_TK echo Python %PY_NO_TK% was found, but without Tk, which the popups need: run its installer again, choose Modify, tick "tcl/tk and IDLE", then double-click this file again.
if defined PY_NO_TK goto :stop
if defined PY_OTHER echo Python %PY_OTHER% was found, but the wizard needs Python 3.11, 3.12, 3.13 or 3.14: install Python 3.14 from python.org (with "tcl/tk and IDLE" and the "py launcher" ticked), then double-click this file again.
if defined PY_OTHER goto :stop
echo No Python was found: install Python 3.14 from python.org (the wizard needs 3.11, 3.12, 3.13 or 3.14; keep "tcl/tk and IDLE" and the "py launcher" ticked), then double-click this file again.
goto :stop

:venv_failed
if exist "%VENV%\" rmdir /s /q "%VENV%"
echo Python %PY_VERSION% could not create the environment in "%VENV%" (see the message above): make sure this folder is writable and not being synced, then double-click this file again.
goto :stop

:pip_failed
"%VPY%" -c "import urllib.request; urllib.request.urlopen('https://pypi.org/simple/pip/', timeout=15)" >nul 2>&1
if errorlevel 1 goto :no_internet
echo Installing the packages failed (pip's messages are above): double-click this file again, and if it fails the same way, delete the .venv folder and report pip's messages.
goto :stop

:no_internet
echo The packages could not be downloaded because pypi.org cannot be reached: check the internet connection (and the proxy settings, if any), then double-click this file again.
goto :stop

:stop
call :keep_window_open
popd
exit /b 1
