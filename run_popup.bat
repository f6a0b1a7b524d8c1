@echo off
rem Start the LoRA training wizard on Windows: double-click this file.
rem The first run creates the .venv folder beside it (a few minutes); later runs start at once.
rem Options pass through, e.g.  run_popup.bat --demo   or   run_popup.bat --load-json "C:\my configs\a.json"
setlocal EnableExtensions
cd /d "%~dp0"
set "VENV=%~dp0.venv"
set "VPY=%VENV%\Scripts\python.exe"
if not defined TORCH_CUDA_INDEX set "TORCH_CUDA_INDEX=https://download.pytorch.org/whl/cu128"

if not exist "%VPY%" (
    call :find_python
    if errorlevel 1 goto :no_python
    echo Creating the Python environment in "%VENV%" ^(first run only^)...
    %PY% -m venv "%VENV%"
    if errorlevel 1 goto :failed
)

fc /b "%~dp0requirements.txt" "%VENV%\requirements.installed" >nul 2>&1
if errorlevel 1 (
    echo Installing the pinned packages ^(first run, or after an update^)...
    "%VPY%" -m pip install --quiet --disable-pip-version-check --upgrade pip >nul 2>&1
    where nvidia-smi >nul 2>&1
    if not errorlevel 1 (
        echo An NVIDIA GPU was found: installing the CUDA build of PyTorch...
        "%VPY%" -m pip install --quiet --disable-pip-version-check torch==2.13.0 --index-url "%TORCH_CUDA_INDEX%"
        if errorlevel 1 echo Could not install the CUDA build of PyTorch; training will use the CPU. Set TORCH_CUDA_INDEX to the right PyTorch index and run this again.
    )
    "%VPY%" -m pip install --quiet --disable-pip-version-check -r "%~dp0requirements.txt"
    if errorlevel 1 goto :failed
    copy /y "%~dp0requirements.txt" "%VENV%\requirements.installed" >nul
)

"%VPY%" "%~dp0popup_main.py" %*
set "CODE=%ERRORLEVEL%"
if not "%CODE%"=="0" pause
exit /b %CODE%

:find_python
for %%V in (3.12 3.11 3.10) do (
    py -%%V -c "import tkinter" >nul 2>&1
    if not errorlevel 1 (
        set "PY=py -%%V"
        exit /b 0
    )
)
python -c "import sys, tkinter; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 12) else 1)" >nul 2>&1
if not errorlevel 1 (
    set "PY=python"
    exit /b 0
)
exit /b 1

:no_python
echo No Python 3.10, 3.11 or 3.12 with Tk was found. Install Python 3.11 from python.org (tick "tcl/tk" and "py launcher"), then double-click this file again.
pause
exit /b 1

:failed
echo Setting up the environment failed (see the messages above). Check your internet connection and double-click this file again; delete the .venv folder if it keeps failing.
pause
exit /b 1
